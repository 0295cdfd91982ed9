//! The GraphQL document, checked once at configure: its syntax, the one operation the route
//! sends, and that operation's variables against the config's `[variables]`.

use apollo_parser::Parser;
use apollo_parser::cst::{self, CstNode};

use crate::variables::Kind;

/// A variable the operation declares (`$id: ID!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The name, without `$`.
    pub name: String,
    /// The type as written (`ID!`, `[Int]`).
    pub ty: String,
    /// Non-null and without a default in the document: the operation cannot run without it.
    pub required: bool,
}

/// The operation a route sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its name; `None` for an anonymous operation (`{ user { id } }`).
    pub name: Option<String>,
    /// The variables it declares.
    pub variables: Vec<Declared>,
}

impl Operation {
    /// Parses `document` and picks the operation named `operation_name`, or its only one; the
    /// error names the config key and, for a syntax error, the line:column in the document.
    pub fn parse(document: &str, operation_name: Option<&str>) -> Result<Self, String> {
        let tree = Parser::new(document).parse();
        if let Some(error) = tree.errors().next() {
            let (line, column) = line_column(document, error.index());
            return Err(format!("`query`: GraphQL syntax error at {line}:{column} (line:column in the query): {}", error.message()));
        }
        let operations: Vec<cst::OperationDefinition> = tree
            .document()
            .definitions()
            .filter_map(|d| match d {
                cst::Definition::OperationDefinition(op) => Some(op),
                _ => None,
            })
            .collect();
        let operation = select(&operations, operation_name)?;
        if operation.operation_type().is_some_and(|t| t.subscription_token().is_some()) {
            return Err("`query`: a `subscription` is answered as a stream of events, which one POST to the GraphQL endpoint cannot carry: send a `query` or a `mutation`".to_owned());
        }
        Ok(Self { name: name_of(operation), variables: declared(operation) })
    }

    /// Checks the config's variables against the declared ones: each configured variable is
    /// declared, with a `type` that can be the declared type's (a `string` for an `Int!` would
    /// be refused by the server on every request, as the client's fault), and each required one
    /// (`ID!` without a default) is configured.
    pub fn check_variables(&self, configured: &[(&str, Kind)]) -> Result<(), String> {
        for (name, kind) in configured {
            if let Some(declared) = self.variables.iter().find(|d| d.name == *name)
                && let Some(wanted) = kind_for(&declared.ty)
                && !wanted.contains(kind)
            {
                let types: Vec<String> = wanted.iter().map(|k| format!("\"{}\"", k.config_name())).collect();
                return Err(format!(
                    "`variables.{name}`: `${name}` is declared `{}` but its `type` is \"{}\"{}: set `type = {}`",
                    declared.ty,
                    kind.config_name(),
                    if *kind == Kind::String { " (the default)" } else { "" },
                    types.join(" or ")
                ));
            }
        }
        let configured: Vec<&str> = configured.iter().map(|(name, _)| *name).collect();
        let operation = match &self.name {
            Some(name) => format!("the operation `{name}`"),
            None => "the operation".to_owned(),
        };
        if let Some(name) = configured.iter().find(|name| !self.variables.iter().any(|d| d.name == **name)) {
            let declared: Vec<String> = self.variables.iter().map(|d| format!("`${}`", d.name)).collect();
            let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
            return Err(format!("`variables.{name}`: {operation} declares no `${name}` (it declares: {declared})"));
        }
        if let Some(Declared { name, ty, .. }) = self.variables.iter().find(|d| d.required && !configured.contains(&d.name.as_str())) {
            return Err(format!(
                "`variables`: {operation} requires `${name}: {ty}` (non-null, no default in the query): add `{name} = {{ from = \"...\" }}` to `variables`"
            ));
        }
        Ok(())
    }
}

/// The `type`s a variable declared as `ty` (`Int!`, `[ID!]`, `UserInput`) may be given: for
/// the built-in scalars and lists; `None` for a type the gateway cannot know (a custom scalar,
/// an enum, an input object), which any `type` may fill.
fn kind_for(ty: &str) -> Option<&'static [Kind]> {
    let ty = ty.trim().trim_end_matches('!').trim();
    if ty.starts_with('[') {
        return Some(&[Kind::Json]);
    }
    Some(match ty {
        "Int" => &[Kind::Int, Kind::Json],
        "Float" => &[Kind::Float, Kind::Int, Kind::Json],
        "Boolean" => &[Kind::Bool, Kind::Json],
        "String" => &[Kind::String, Kind::Json],
        // An `ID` is serialized as a string, and takes an integer too (spec 3.5.5).
        "ID" => &[Kind::String, Kind::Int, Kind::Json],
        _ => return None,
    })
}

/// The 1-based line and column (in characters) of byte `index` in `text`.
fn line_column(text: &str, index: usize) -> (usize, usize) {
    let before = text.get(..index).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// The operation named `wanted`, or the document's only one.
fn select<'o>(operations: &'o [cst::OperationDefinition], wanted: Option<&str>) -> Result<&'o cst::OperationDefinition, String> {
    let names = || {
        let names: Vec<String> = operations.iter().map(|op| name_of(op).map_or("(anonymous)".to_owned(), |n| format!("`{n}`"))).collect();
        names.join(", ")
    };
    let Some(wanted) = wanted else {
        return match operations {
            [only] => Ok(only),
            [] => Err("`query`: the document has no operation (a `query`, `mutation` or `{ ... }`)".to_owned()),
            _ => Err(format!("`query`: the document has {} operations ({}): choose the one sent with `operation_name`", operations.len(), names())),
        };
    };
    let mut named = operations.iter().filter(|op| name_of(op).as_deref() == Some(wanted));
    match (named.next(), named.next()) {
        (Some(op), None) => Ok(op),
        (Some(_), Some(_)) => Err(format!("`query`: the document has several operations named `{wanted}`")),
        (None, _) => Err(format!("`operation_name`: the query has no operation `{wanted}` (its operations: {})", names())),
    }
}

/// The operation's name, if it has one.
fn name_of(operation: &cst::OperationDefinition) -> Option<String> {
    operation.name().map(|n| n.text().to_string())
}

/// The variables `operation` declares.
fn declared(operation: &cst::OperationDefinition) -> Vec<Declared> {
    let Some(definitions) = operation.variable_definitions() else { return Vec::new() };
    definitions
        .variable_definitions()
        .filter_map(|d| {
            let name = d.variable()?.name()?.text().to_string();
            let ty = d.ty()?;
            let required = matches!(ty, cst::Type::NonNullType(_)) && d.default_value().is_none();
            Some(Declared { name, ty: ty.syntax().text().to_string().trim().to_owned(), required })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(document: &str, name: Option<&str>) -> Result<Operation, String> {
        Operation::parse(document, name)
    }

    #[test]
    fn the_operation_and_its_variables_are_read() {
        let user = op("query User($id: ID!, $posts: Int = 3, $x: [String!]!) { user(id: $id) { id } }", None).unwrap();
        assert_eq!(user.name.as_deref(), Some("User"));
        let declared: Vec<(&str, &str, bool)> = user.variables.iter().map(|d| (d.name.as_str(), d.ty.as_str(), d.required)).collect();
        assert_eq!(declared, [("id", "ID!", true), ("posts", "Int", false), ("x", "[String!]!", true)]);
        assert_eq!(op("{ a }", None).unwrap(), Operation { name: None, variables: vec![] });
        let two = "query A { a } fragment F on Q { b } mutation B($v: Int! = 1) { b(v: $v) }";
        let b = op(two, Some("B")).unwrap();
        assert_eq!((b.name.as_deref(), b.variables[0].required), (Some("B"), false), "a default makes `Int!` optional");
    }

    #[test]
    fn syntax_errors_name_their_line_and_column() {
        let err = op("query User($id: ID!) {\n  user(id: $id) { id name }\n", None).unwrap_err();
        assert!(err.starts_with("`query`: GraphQL syntax error at 3:1 (line:column in the query): "), "{err}");
        assert!(err.ends_with("expected R_CURLY, got EOF"), "{err}");
        let err = op("{ a(x: \"héllo\") b( }", None).unwrap_err();
        assert!(err.starts_with("`query`: GraphQL syntax error at 1:20 "), "columns count characters, not bytes: {err}");
        let err = op("query { user(id: ) { id } }", None).unwrap_err();
        assert_eq!(err, "`query`: GraphQL syntax error at 1:18 (line:column in the query): expected a valid Value");
        let err = op("{ a(x: \"unterminated) }", None).unwrap_err();
        assert_eq!(err, "`query`: GraphQL syntax error at 1:8 (line:column in the query): unterminated string value");
    }

    #[test]
    fn exactly_one_operation_unless_one_is_named() {
        let two = "query A { a } query B { b }";
        assert_eq!(
            op(two, None).unwrap_err(),
            "`query`: the document has 2 operations (`A`, `B`): choose the one sent with `operation_name`"
        );
        assert_eq!(op(two, Some("C")).unwrap_err(), "`operation_name`: the query has no operation `C` (its operations: `A`, `B`)");
        assert_eq!(op("{ a }", Some("A")).unwrap_err(), "`operation_name`: the query has no operation `A` (its operations: (anonymous))");
        assert_eq!(op("query A { a } query A { b }", Some("A")).unwrap_err(), "`query`: the document has several operations named `A`");
        assert!(op("fragment F on Q { a }", None).unwrap_err().starts_with("`query`: the document has no operation"));
    }

    #[test]
    fn configured_variables_match_the_declared_ones() {
        use Kind::*;
        let user = op("query User($id: ID!, $posts: Int, $n: Int! = 2) { user(id: $id) { id } }", None).unwrap();
        assert!(user.check_variables(&[("id", String), ("posts", Int)]).is_ok());
        assert!(user.check_variables(&[("id", String)]).is_ok());
        assert_eq!(
            user.check_variables(&[("id", String), ("limit", String)]).unwrap_err(),
            "`variables.limit`: the operation `User` declares no `$limit` (it declares: `$id`, `$posts`, `$n`)"
        );
        assert_eq!(
            user.check_variables(&[("posts", Int)]).unwrap_err(),
            "`variables`: the operation `User` requires `$id: ID!` (non-null, no default in the query): add `id = { from = \"...\" }` to `variables`"
        );
        let anonymous = op("{ a }", None).unwrap();
        assert_eq!(anonymous.check_variables(&[("x", String)]).unwrap_err(), "`variables.x`: the operation declares no `$x` (it declares: none)");
    }

    /// A `type` the declared type cannot take is refused at load: the server would refuse every
    /// request's value (a string for `Int!`), as the client's fault. Types the gateway cannot
    /// know (custom scalars, enums, input objects) take any.
    #[test]
    fn a_variables_type_must_fit_its_declaration() {
        use Kind::*;
        let q = op("query Q($id: Int!, $flag: Boolean, $r: Float, $ids: [ID!], $who: ID, $in: UserInput, $s: String) { a }", None).unwrap();
        assert_eq!(
            q.check_variables(&[("id", String)]).unwrap_err(),
            "`variables.id`: `$id` is declared `Int!` but its `type` is \"string\" (the default): set `type = \"int\" or \"json\"`"
        );
        assert!(q.check_variables(&[("flag", String), ("id", Int)]).unwrap_err().contains("`$flag` is declared `Boolean`"));
        assert!(q.check_variables(&[("ids", String), ("id", Int)]).unwrap_err().contains("set `type = \"json\"`"));
        let fits = [("id", Int), ("flag", Bool), ("r", Int), ("ids", Json), ("who", Int), ("in", String), ("s", String)];
        assert!(q.check_variables(&fits).is_ok());
    }

    #[test]
    fn a_subscription_is_refused() {
        let err = op("subscription S { events { id } }", None).unwrap_err();
        assert!(err.starts_with("`query`: a `subscription` is answered as a stream of events"), "{err}");
        assert!(op("mutation M { a }", None).is_ok() && op("query Q { a }", None).is_ok());
    }
}

//! `Signature-Input` and `Signature` (RFC 9421 4.1, 4.2): Dictionary fields keyed by label. Each
//! `Signature-Input` member is an inner list of component identifiers with the signature's
//! parameters (2.3); the `Signature` member of the same label is the signature, a byte sequence.

use sfv::{BareItem, Dictionary, FieldType as _, InnerList, ListEntry, Parser};

use crate::components::Component;

/// Most components one signature may cover. RFC 9421's examples cover at most 8; each covered
/// component costs a host call or two and a duplicate check against the others, so a header
/// listing thousands cannot run the plugin into its CPU deadline (a 500 instead of a 401).
pub(crate) const MAX_COMPONENTS: usize = 64;

/// One signature of the request, its input parsed.
#[derive(Debug)]
pub(crate) struct Signed {
    /// The covered components, in order.
    pub(crate) components: Vec<Component>,
    /// The `@signature-params` value: the inner list with its parameters, serialized.
    pub(crate) params: String,
    /// `created` (Unix seconds).
    pub(crate) created: Option<i64>,
    /// `expires` (Unix seconds).
    pub(crate) expires: Option<i64>,
    /// `nonce`.
    pub(crate) nonce: Option<String>,
    /// `alg`.
    pub(crate) alg: Option<String>,
    /// `keyid`.
    pub(crate) keyid: Option<String>,
    /// `tag`.
    pub(crate) tag: Option<String>,
    /// The signature bytes.
    pub(crate) signature: Vec<u8>,
}

/// Every instance of a field, joined as one value (a Dictionary may span several lines).
fn joined(values: &[Vec<u8>], field: &str) -> Result<String, String> {
    let texts: Vec<&str> = values
        .iter()
        .map(|v| std::str::from_utf8(v).map(str::trim))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{field}` is not a structured field"))?;
    Ok(texts.join(", "))
}

/// The two fields, parsed.
pub(crate) struct Fields {
    inputs: Dictionary,
    signatures: Dictionary,
}

impl Fields {
    /// Parses `Signature-Input` and `Signature` (every instance of each).
    pub(crate) fn parse(inputs: &[Vec<u8>], signatures: &[Vec<u8>]) -> Result<Self, String> {
        let inputs: Dictionary = Parser::new(&joined(inputs, "Signature-Input")?)
            .parse()
            .map_err(|e| format!("`Signature-Input` is not a dictionary ({e})"))?;
        let signatures: Dictionary = Parser::new(&joined(signatures, "Signature")?)
            .parse()
            .map_err(|e| format!("`Signature` is not a dictionary ({e})"))?;
        Ok(Self { inputs, signatures })
    }

    /// The labels of `Signature-Input` in order, with the `keyid` and `tag` each names (when a
    /// string): what a signature is chosen by.
    pub(crate) fn labels(&self) -> impl Iterator<Item = (&str, Option<&str>, Option<&str>)> {
        self.inputs.iter().map(|(label, entry)| {
            let param = |name: &str| match entry {
                ListEntry::InnerList(list) => list.params.iter().find(|(k, _)| k.as_str() == name).and_then(|(_, v)| match v {
                    BareItem::String(s) => Some(s.as_str()),
                    _ => None,
                }),
                ListEntry::Item(_) => None,
            };
            (label.as_str(), param("keyid"), param("tag"))
        })
    }

    /// The signature labelled `label`, parsed and checked for shape.
    pub(crate) fn signed(&self, label: &str) -> Result<Signed, String> {
        let entry = self.inputs.iter().find(|(k, _)| k.as_str() == label).map(|(_, v)| v);
        let Some(ListEntry::InnerList(list)) = entry else {
            return Err(format!("`Signature-Input` has no inner list labelled `{label}`"));
        };
        let signature = match self.signatures.iter().find(|(k, _)| k.as_str() == label).map(|(_, v)| v) {
            Some(ListEntry::Item(item)) => match &item.bare_item {
                BareItem::ByteSequence(bytes) => bytes.clone(),
                _ => return Err(format!("`Signature`: `{label}` is not a byte sequence")),
            },
            Some(ListEntry::InnerList(_)) => return Err(format!("`Signature`: `{label}` is not a byte sequence")),
            None => return Err(format!("`Signature` has no member `{label}`")),
        };
        signed(list, signature)
    }
}

/// Reads the components and parameters of one signature.
fn signed(list: &InnerList, signature: Vec<u8>) -> Result<Signed, String> {
    if list.items.len() > MAX_COMPONENTS {
        return Err(format!("covers {} components, more than {MAX_COMPONENTS}", list.items.len()));
    }
    let components = list.items.iter().map(Component::from_item).collect::<Result<Vec<_>, _>>()?;
    let mut out = Signed {
        components,
        params: vec![ListEntry::InnerList(list.clone())].serialize().unwrap_or_default(),
        created: None,
        expires: None,
        nonce: None,
        alg: None,
        keyid: None,
        tag: None,
        signature,
    };
    for (name, value) in &list.params {
        let integer = || match value {
            BareItem::Integer(i) => Ok(i64::from(*i)),
            _ => Err(format!("`{}` is not an integer", name.as_str())),
        };
        let string = || match value {
            BareItem::String(s) => Ok(s.as_str().to_owned()),
            _ => Err(format!("`{}` is not a string", name.as_str())),
        };
        match name.as_str() {
            "created" => out.created = Some(integer()?),
            "expires" => out.expires = Some(integer()?),
            "nonce" => out.nonce = Some(string()?),
            "alg" => out.alg = Some(string()?),
            "keyid" => out.keyid = Some(string()?),
            "tag" => out.tag = Some(string()?),
            // Other parameters are not understood here, but they are signed (they are part of
            // `@signature-params`), so keeping them changes nothing a signer did not mean.
            _ => {}
        }
    }
    Ok(out)
}

//! A plugin built against `airlock:plugin@0.2.99`, a later patch release of the contract than
//! any gateway speaks, calling a request method only that release has: what a plugin author
//! gets by building with a newer airlock-sdk than the gateway it deploys to. The gateway must
//! say so, not report the plugin as broken.

wit_bindgen::generate!({
    inline: r"
        package airlock:plugin@0.2.99;

        interface types {
            resource request {
                /// A method later gateways have and this one does not.
                from-the-future: func() -> string;
            }
        }

        interface peeker {
            use types.{request};
            peek: func(request: borrow<request>) -> string;
        }

        world later {
            import types;
            export peeker;
        }
    ",
});

struct Future;

impl exports::airlock::plugin::peeker::Guest for Future {
    fn peek(request: &airlock::plugin::types::Request) -> String {
        request.from_the_future()
    }
}

export!(Future);

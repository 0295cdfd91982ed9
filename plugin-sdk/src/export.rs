//! [`export_plugin!`](crate::export_plugin) and the glue it expands to.

use std::cell::OnceCell;

use crate::bindings::airlock::plugin::types as raw;
use crate::{Action, Plugin, Request, Response};

/// Exports a [`Plugin`](crate::Plugin) type as the component's `handler`.
///
/// Write it once, at the top level of the plugin crate (a `cdylib`), naming the type that
/// implements [`Plugin`](crate::Plugin):
///
/// ```
/// # use airlock_sdk::{Plugin, export_plugin};
/// struct Noop;
/// impl Plugin for Noop {
///     type Config = ();
///     fn new(_: ()) -> Result<Self, String> { Ok(Noop) }
/// }
/// export_plugin!(Noop);
/// ```
///
/// The generated handler keeps the configured plugin in a thread-local cell:
/// `configure` deserializes the config into [`Plugin::Config`](crate::Plugin::Config) (errors
/// name the key path) and calls [`Plugin::new`](crate::Plugin::new); the phases call the
/// configured plugin. A phase called before a successful `configure` answers 500 with a short
/// text body and logs an error. Exporting two plugins from one crate fails to link: a component
/// is one plugin. Natively (not wasm32) nothing is exported, so a plugin crate's unit tests and
/// `cargo build --all-targets` link.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct __AirlockHandler;

            ::std::thread_local! {
                static __AIRLOCK_PLUGIN: ::core::cell::OnceCell<$plugin> =
                    const { ::core::cell::OnceCell::new() };
            }

            impl $crate::__private::Guest for __AirlockHandler {
                fn describe() -> $crate::__private::RawDescriptor {
                    $crate::__private::describe::<$plugin>()
                }

                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::RawDescriptor, ::std::string::String> {
                    __AIRLOCK_PLUGIN.with(|slot| $crate::__private::configure::<$plugin>(slot, &config))
                }

                fn on_request(req: &$crate::__private::RawRequest) -> $crate::__private::RawAction {
                    __AIRLOCK_PLUGIN.with(|slot| $crate::__private::on_request::<$plugin>(slot, req))
                }

                fn on_response(req: &$crate::__private::RawRequest, resp: &$crate::__private::RawResponse) {
                    __AIRLOCK_PLUGIN.with(|slot| $crate::__private::on_response::<$plugin>(slot, req, resp))
                }
            }

            // Only a wasm32 build is a component: natively (a plugin's unit tests, `cargo build
            // --all-targets`) the crate's cdylib exports nothing, so it links like any library.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::export!(__AirlockHandler with_types_in $crate::bindings);
        };
    };
}

/// `handler.describe`.
pub fn describe<P: Plugin>() -> raw::Descriptor {
    to_raw(P::descriptor())
}

fn to_raw(d: crate::Descriptor) -> raw::Descriptor {
    raw::Descriptor {
        on_request: d.on_request,
        on_response: d.on_response,
        request_body: d.request_body,
        response_body: d.response_body,
    }
}

/// `handler.configure`: parses the config, builds the plugin, keeps it in `slot`, and reports
/// the phases it uses.
pub fn configure<P: Plugin>(slot: &OnceCell<P>, config: &str) -> Result<raw::Descriptor, String> {
    if slot.get().is_some() {
        return Err("this instance is already configured (the gateway called `configure` twice)".to_owned());
    }
    let plugin = crate::configure::<P>(config)?;
    let descriptor = to_raw(plugin.configured_descriptor());
    // Cannot fail: checked empty above, and an instance runs one call at a time.
    let _ = slot.set(plugin);
    Ok(descriptor)
}

const NOT_CONFIGURED: &str = "plugin not configured\n";

/// `handler.on-request`.
pub fn on_request<P: Plugin>(slot: &OnceCell<P>, req: &raw::Request) -> raw::Action {
    match slot.get() {
        Some(plugin) => plugin.on_request(Request::from_raw(req)).into_raw(),
        None => {
            crate::log::error("on-request was called before a successful configure; answering 500");
            Action::text(500, NOT_CONFIGURED).into_raw()
        }
    }
}

/// `handler.on-response`.
pub fn on_response<P: Plugin>(slot: &OnceCell<P>, req: &raw::Request, resp: &raw::Response) {
    match slot.get() {
        Some(plugin) => plugin.on_response(Request::from_raw(req), Response::from_raw(resp)),
        None => {
            crate::log::error("on-response was called before a successful configure; answering 500");
            resp.set_status(500);
            // Only takes effect if the plugin asked for the response body.
            resp.set_body(NOT_CONFIGURED.as_bytes());
            resp.set_header("content-type", b"text/plain; charset=utf-8");
        }
    }
}

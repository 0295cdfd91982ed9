//! [`export_plugin!`](crate::export_plugin) and the glue it expands to.

use std::cell::OnceCell;
use std::io::Write;

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
/// text body and logs an error. Every exported call ends by flushing the plugin's stdout and
/// stderr, so a `print!` without a final newline reaches the gateway log from the call (and
/// under the request id) that printed it. Exporting two plugins from one crate fails to link: a
/// component is one plugin. Natively (not wasm32) nothing is exported, so a plugin crate's unit
/// tests and `cargo build --all-targets` link.
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

/// Writes out whatever the plugin left in the guest's stdout and stderr buffers, at the end of
/// every exported call. Rust's stdout is line-buffered: without this, a `print!` with no final
/// newline would stay in the buffer after the call returns and reach the gateway log during
/// the instance's next call, under that call's request id (or never, if the instance is
/// dropped). Flushing an empty buffer writes nothing, so this costs next to nothing. Errors are
/// ignored: the gateway's log streams do not fail, and a call must not fail for its output.
pub(crate) fn flush_stdio() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// `handler.describe`.
pub fn describe<P: Plugin>() -> raw::Descriptor {
    let descriptor = to_raw(P::descriptor());
    flush_stdio();
    descriptor
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
    let result = configure_slot(slot, config);
    flush_stdio();
    result
}

fn configure_slot<P: Plugin>(slot: &OnceCell<P>, config: &str) -> Result<raw::Descriptor, String> {
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
    let action = match slot.get() {
        Some(plugin) => plugin.on_request(Request::from_raw(req)).into_raw(),
        None => {
            crate::log::error("on-request was called before a successful configure; answering 500");
            Action::text(500, NOT_CONFIGURED).into_raw()
        }
    };
    flush_stdio();
    action
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
    flush_stdio();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints without a final newline from `new`, as the flush at the end of a call is for.
    struct Chatty;

    impl Plugin for Chatty {
        type Config = ();
        fn new(_: ()) -> Result<Self, String> {
            print!("configuring, no newline");
            eprint!("and on stderr");
            Ok(Chatty)
        }
    }

    #[test]
    fn configure_fills_the_slot_once_and_flushes() {
        let slot = OnceCell::new();
        let descriptor = configure::<Chatty>(&slot, "{}").unwrap();
        assert!(descriptor.on_request && descriptor.on_response);
        assert!(slot.get().is_some());
        let err = configure::<Chatty>(&slot, "{}").unwrap_err();
        assert!(err.contains("already configured"), "{err}");
        // Natively the flush reaches the test harness's stdout; it must never fail the call.
        flush_stdio();
    }

    #[test]
    fn configure_errors_leave_the_slot_empty() {
        let slot = OnceCell::<Chatty>::new();
        let err = configure::<Chatty>(&slot, r#"{"x": 1}"#).unwrap_err();
        assert!(!err.is_empty());
        assert!(slot.get().is_none());
    }
}

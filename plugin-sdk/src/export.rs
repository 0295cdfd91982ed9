//! [`export_plugin!`](crate::export_plugin) and the glue it expands to.

use std::cell::{Cell, OnceCell};
use std::io::Write;

use crate::bindings::airlock::plugin::types as raw;
use crate::{Action, Descriptor, Plugin, Request, Response};

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
    crate::fixed_edits::declare(&plugin)?;
    crate::fixed_edits::declare_response_bodies(&plugin)?;
    let configured = plugin.configured_descriptor();
    IN_EFFECT.set(Some(in_effect(P::descriptor(), configured)));
    // Cannot fail: checked empty above, and an instance runs one call at a time.
    let _ = slot.set(plugin);
    Ok(to_raw(configured))
}

/// The phase call the plugin is running, for [`body_writable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `on-request`.
    Request,
    /// `on-response`.
    Response,
}

/// Which body a setter replaces, for [`body_writable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// The request's.
    Request,
    /// The response's.
    Response,
}

thread_local! {
    /// What the gateway runs this instance with: [`Plugin::descriptor`] narrowed by
    /// [`Plugin::configured_descriptor`] (the gateway keeps on only what both ask for). Set by a
    /// successful `configure`, which every phase call follows. Kept here, once per instance (a
    /// component is one plugin), so the body setters can tell, without a call to the gateway,
    /// whether it will take a body.
    static IN_EFFECT: Cell<Option<Descriptor>> = const { Cell::new(None) };
    /// The phase running now, while the plugin runs it.
    static PHASE: Cell<Option<Phase>> = const { Cell::new(None) };
}

/// The descriptor the gateway runs a configured instance with: it only narrows with the
/// configured one (`handler.configure`), so a phase or body is on only when both ask for it.
fn in_effect(declared: Descriptor, configured: Descriptor) -> Descriptor {
    Descriptor {
        on_request: declared.on_request && configured.on_request,
        on_response: declared.on_response && configured.on_response,
        request_body: declared.request_body && configured.request_body,
        response_body: declared.response_body && configured.response_body,
    }
}

/// Runs a phase of the plugin with [`PHASE`] saying which.
fn in_phase<T>(phase: Phase, run: impl FnOnce() -> T) -> T {
    PHASE.set(Some(phase));
    let out = run();
    PHASE.set(None);
    out
}

/// `Ok` when the gateway will take a body set on `body` in the call in progress, else `Err`
/// saying why it will ignore it: the plugin has no access to that body (see
/// [`Descriptor::request_body`]), or it is the request's in `on_response`, where the request is
/// read-only. What the SDK cannot see is not checked: a body larger than the route's
/// `max_body_bytes` (no call tells the limit), or a response body this request narrowed away
/// with [`Request::limit_response_body`]. Checked before a setter that changes more than the
/// body (the `content-type` of `set_json_body`), so that nothing changes when the body is not
/// taken; free, where reading the body back would copy it across the boundary.
pub(crate) fn body_writable(body: Body) -> Result<(), String> {
    body_refusal(IN_EFFECT.get(), PHASE.get(), body)
}

/// [`body_writable`] for an instance running `access` in `phase`. Outside a phase call (never
/// the case for a `Request` or `Response`, which only the phases are handed), nothing is known
/// and the gateway decides, as it always does.
fn body_refusal(access: Option<Descriptor>, phase: Option<Phase>, body: Body) -> Result<(), String> {
    let (Some(access), Some(phase)) = (access, phase) else { return Ok(()) };
    match body {
        Body::Request if phase == Phase::Response => {
            Err("the gateway ignores a request body set in on_response: the request is read-only there".to_owned())
        }
        Body::Request if !access.request_body => Err("the gateway ignores this request body: the plugin has no request-body \
             access (its `Plugin::descriptor` must ask for it with `Descriptor::with_request_body`, and its \
             `configured_descriptor`, if any, keep it)"
            .to_owned()),
        Body::Response if !access.response_body => Err("the gateway ignores this response body: the plugin has no \
             response-body access (its `Plugin::descriptor` must ask for it with `Descriptor::with_response_body`, \
             and its `configured_descriptor`, if any, keep it)"
            .to_owned()),
        Body::Request | Body::Response => Ok(()),
    }
}

const NOT_CONFIGURED: &str = "plugin not configured\n";

/// `handler.on-request`.
pub fn on_request<P: Plugin>(slot: &OnceCell<P>, req: &raw::Request) -> raw::Action {
    let action = match slot.get() {
        Some(plugin) => in_phase(Phase::Request, || plugin.on_request(Request::from_raw(req))).into_raw(),
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
        Some(plugin) => in_phase(Phase::Response, || plugin.on_response(Request::from_raw(req), Response::from_raw(resp))),
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

    /// Declares both bodies; its config can give up the request body, as `builtin:transform`'s
    /// can.
    struct Bodies;

    impl Plugin for Bodies {
        type Config = bool;
        fn new(request_body: bool) -> Result<Self, String> {
            if request_body { Ok(Bodies) } else { Err("`request_body` is off".into()) }
        }
        fn descriptor() -> Descriptor {
            Descriptor::new().with_request_body().with_response_body()
        }
        fn configured_descriptor(&self) -> Descriptor {
            Descriptor::new().with_response_body()
        }
    }

    /// Asks, once configured, for a body its `describe` did not declare.
    struct Greedy;

    impl Plugin for Greedy {
        type Config = ();
        fn new(_: ()) -> Result<Self, String> {
            Ok(Greedy)
        }
        fn descriptor() -> Descriptor {
            Descriptor::request_only()
        }
        fn configured_descriptor(&self) -> Descriptor {
            Descriptor::new().with_request_body()
        }
    }

    #[test]
    fn configure_keeps_what_the_gateway_runs_the_instance_with() {
        assert_eq!(IN_EFFECT.get(), None, "nothing before a configure");
        let slot = OnceCell::<Bodies>::new();
        assert!(configure::<Bodies>(&slot, "false").is_err());
        assert_eq!(IN_EFFECT.get(), None, "nor after a failed one");
        let answered = configure::<Bodies>(&slot, "true").unwrap();
        assert!(!answered.request_body && answered.response_body, "the gateway is told the configured descriptor");
        assert_eq!(IN_EFFECT.get(), Some(Descriptor::new().with_response_body()));
        // The gateway only narrows: what `describe` left off stays off, whatever configure says.
        let greedy = OnceCell::<Greedy>::new();
        configure::<Greedy>(&greedy, "{}").unwrap();
        assert_eq!(IN_EFFECT.get(), Some(Descriptor::request_only()));
    }

    #[test]
    fn a_body_is_refused_where_the_gateway_would_ignore_it() {
        let (request, response) = (Some(Phase::Request), Some(Phase::Response));
        let both = Some(Descriptor::new().with_request_body().with_response_body());
        let none = Some(Descriptor::new());
        assert_eq!(body_refusal(both, request, Body::Request), Ok(()));
        assert_eq!(body_refusal(both, response, Body::Response), Ok(()));
        let err = body_refusal(none, request, Body::Request).unwrap_err();
        assert!(err.contains("no request-body access") && err.contains("with_request_body"), "{err}");
        let err = body_refusal(none, response, Body::Response).unwrap_err();
        assert!(err.contains("no response-body access") && err.contains("with_response_body"), "{err}");
        let err = body_refusal(both, response, Body::Request).unwrap_err();
        assert!(err.contains("read-only"), "{err}");
        // Outside a phase call nothing is known: the gateway decides.
        assert_eq!(body_refusal(None, request, Body::Request), Ok(()));
        assert_eq!(body_refusal(none, None, Body::Response), Ok(()));
    }

    #[test]
    fn the_phase_is_known_while_it_runs_only() {
        assert_eq!(in_phase(Phase::Response, || PHASE.get()), Some(Phase::Response));
        assert_eq!(PHASE.get(), None);
        let slot = OnceCell::<Bodies>::new();
        configure::<Bodies>(&slot, "true").unwrap();
        assert!(in_phase(Phase::Request, || body_writable(Body::Request)).is_err(), "configured without it");
        assert_eq!(in_phase(Phase::Response, || body_writable(Body::Response)), Ok(()));
    }
}

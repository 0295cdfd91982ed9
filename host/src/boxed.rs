//! Futures made in their box, for the few a request boxes on its way (the request's own future,
//! the plugin chain's phases).

use std::future::Future;
use std::pin::Pin;

/// The future `make` returns, made in its box. `Box::pin(future)` makes the future on the stack
/// and then copies the whole of it into the box: a request's future is ~10 KB, and the chain's
/// ~3 KB, of which only the captured values (a few hundred bytes) are written before the first
/// poll. With the box allocated first, the future is written straight into it (checked in the
/// release build's code: the copy that was the size of the future is now that of the captures).
#[inline(always)]
pub fn in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

//! `limits.max_connections_per_client`: most connections one client address may hold open at
//! once, so that one client cannot take every place under `limits.max_connections` (nginx's
//! `limit_conn` per `$binary_remote_addr`, HAProxy's `src_conn_cur`). Off unless set: clients
//! behind one NAT or CDN share an address, so only the operator can choose a number.
//!
//! The address is the TCP peer's (the connection is counted before any request names a
//! forwarded client), or on a listener with `proxy_protocol` the client its PROXY header announces
//! (counted once the header is read), IPv4-mapped IPv6 addresses counted as their IPv4 address. A
//! connection over the limit is closed as soon as it is accepted (or its header read): waiting, as at the global cap, would hold the
//! accept loop for everyone else. Counting takes a lock once per accepted connection and once
//! when it closes, never per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per client address, shared by every accept loop.
#[derive(Debug, Default)]
pub struct ClientConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A client already holds its `limit` connections: the new one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLimit;

impl ClientConnections {
    /// Admits a connection from `client` under `limit` (`None`: no limit, nothing counted). The
    /// slot, while it lives, counts the connection.
    pub fn admit(self: &Arc<Self>, client: IpAddr, limit: Option<usize>) -> Result<Option<ClientSlot>, AtLimit> {
        let Some(limit) = limit else { return Ok(None) };
        let client = client.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        // `limit` is at least 1 (the config's bound), so a new entry is never over it.
        if *count >= limit {
            return Err(AtLimit);
        }
        *count += 1;
        Ok(Some(ClientSlot { registry: self.clone(), client }))
    }

    /// Connections `client` holds now (counted ones).
    #[cfg(test)]
    fn open(&self, client: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(&client.to_canonical()).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it (the connection closed) gives its place back.
#[derive(Debug)]
pub struct ClientSlot {
    registry: Arc<ClientConnections>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_and_its_places_back_as_connections_close() {
        let registry = Arc::new(ClientConnections::default());
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = registry.admit(a, Some(2)).expect("first");
        let second = registry.admit(mapped, Some(2)).expect("second, the same client");
        assert_eq!(registry.admit(a, Some(2)).err(), Some(AtLimit));
        assert!(registry.admit(b, Some(2)).is_ok_and(|s| s.is_some()), "another client is not affected");
        drop(first);
        assert_eq!(registry.open(a), 1);
        assert!(registry.admit(a, Some(2)).is_ok(), "a closed connection's place is given back");
        drop(second);
        assert!(registry.admit(a, None).is_ok_and(|s| s.is_none()), "no limit: nothing counted");
        assert_eq!(registry.open(a), 0);
        assert!(registry.open.lock().expect("lock").is_empty(), "no entry is kept for a client without connections");
    }
}

//! TLS session resumption for upstream connections: one [`SessionStore`] per transport,
//! shared by every worker, sharded and sized for many thousands of servers (rustls' default
//! store keeps 256 tickets behind one mutex). Opportunistic connections carry no SNI and
//! are keyed by the server's IP address, so tickets are scoped per (IP, transport) as
//! RFC 9539 asks; authenticated connections are keyed by the name they authenticate.

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

use crate::cache::clock::ClockCache;

const SHARDS: usize = 32;
/// Tickets kept per server (servers usually send two; RFC 8446 section C.4 asks for single
/// use, so a few spares let parallel connections resume).
const TICKETS_PER_SERVER: usize = 4;

#[derive(Debug, Default)]
struct Entry {
    kx_hint: Option<NamedGroup>,
    tickets: VecDeque<Tls13ClientSessionValue>,
}

/// The shared resumption store.
#[derive(Debug)]
pub struct SessionStore {
    shards: Box<[Mutex<ClockCache<ServerName<'static>, Entry>>]>,
}

impl SessionStore {
    /// A store for about `servers` servers.
    pub fn new(servers: usize) -> Self {
        let per_entry = ClockCache::<ServerName<'static>, Entry>::overhead() + 2048;
        let per_shard = servers.div_ceil(SHARDS).max(1) * per_entry;
        Self { shards: (0..SHARDS).map(|_| Mutex::new(ClockCache::new(per_shard))).collect() }
    }

    fn with<R>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut ClockCache<ServerName<'static>, Entry>) -> R) -> R {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        let mut shard = self.shards[(h.finish() as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut shard)
    }

    fn update(&self, name: ServerName<'static>, f: impl FnOnce(&mut Entry)) {
        let key = name.clone();
        // A ticket is a few hundred bytes; charge a fixed estimate per entry.
        self.with(&key, |c| c.upsert(name, 2048, Entry::default, f));
    }

    /// Forgets everything stored for `name` (its tickets can no longer be trusted).
    pub fn forget(&self, name: &ServerName<'_>) {
        let owned = name.to_owned();
        self.with(name, |c| {
            c.remove(&owned);
        });
    }

    /// Forgets every ticket (the roots that authenticated them changed).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, _| false);
        }
    }

    /// Servers with something stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.update(server_name, |e| e.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        let owned = server_name.to_owned();
        self.with(server_name, |c| c.get(&owned).and_then(|e| e.kx_hint))
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.update(server_name, |e| {
            if e.tickets.len() >= TICKETS_PER_SERVER {
                e.tickets.pop_front();
            }
            e.tickets.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(server_name, |c| c.get(server_name).and_then(|e| e.tickets.pop_back()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_store_bounds_tickets_and_separates_servers() {
        let s = SessionStore::new(100);
        let a = ServerName::IpAddress("192.0.2.1".parse::<std::net::IpAddr>().unwrap().into());
        let b = ServerName::try_from("ns1.example.").unwrap().to_owned();
        s.set_kx_hint(a.clone(), NamedGroup::X25519);
        assert_eq!(s.kx_hint(&a), Some(NamedGroup::X25519));
        assert_eq!(s.kx_hint(&b), None);
        assert!(s.take_tls13_ticket(&b).is_none());
        assert_eq!(s.len(), 1);
        s.forget(&a);
        assert_eq!((s.len(), s.kx_hint(&a)), (0, None));
    }
}

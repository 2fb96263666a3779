//! The path of one resolution, recorded only for explain: the data plane's own record of
//! what it did, in DNS terms. The control plane turns it into the REST body.

use std::net::IpAddr;

use adox_api::policy::Transport;
use hickory_proto::rr::{Name, RecordType};

use crate::upstream::plan::TransportPlan;

/// One step of a resolution, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceStep {
    /// A name and type looked up (the question, a CNAME target, a nameserver address).
    Lookup {
        /// The name.
        name: Name,
        /// The type.
        qtype: RecordType,
        /// Nesting: 0 for the question and its chain, more for nameserver addresses.
        depth: u32,
        /// Answered from the record cache without asking anyone.
        from_cache: bool,
    },
    /// A zone cut asked: the closest known delegation for the name.
    Zone {
        /// The zone.
        zone: Name,
        /// The name asked of it (QNAME minimisation may shorten it).
        qname: Name,
        /// The type asked.
        qtype: RecordType,
        /// Its nameservers.
        nameservers: Vec<Name>,
    },
    /// One query to one nameserver address.
    Exchange {
        /// The zone.
        zone: Name,
        /// The nameserver name.
        nameserver: Name,
        /// The address.
        address: IpAddr,
        /// The plan, with why.
        plan: TransportPlan,
        /// What was tried, in order.
        attempts: Vec<TraceAttempt>,
    },
    /// A wait for a nameserver's `_dns` signal before the first query to it
    /// (`transport.signal_wait`).
    SignalWait {
        /// The nameserver.
        nameserver: Name,
        /// `learnt` (in time), `timeout` (the query went out under what was known),
        /// `cycle` (not waited: the signal's lookup waits, through others, for this one)
        /// or `too_deep` (not waited: a chain of signal lookups waiting one for the next
        /// is long enough).
        outcome: &'static str,
    },
}

/// One try over one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceAttempt {
    /// The transport.
    pub transport: Transport,
    /// `ok`, or the failure's short reason (`refused`, `cert-name-mismatch`, `timeout`).
    pub outcome: String,
}

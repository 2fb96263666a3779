//! Response Policy Zones at the worker (`crate::rpz`): the query name is checked before
//! the packet cache on every query, an answer when it is made; a rewrite is never kept in
//! the packet cache (each query is checked and counted), and a policy change empties the
//! packet cache (it may hold answers a new rule rewrites).

use std::net::SocketAddr;
use std::rc::Rc;

use hickory_proto::rr::Name;

use super::{Handled, ReplyTo, Waiter, WorkerCtx};
use crate::resolver::{Answer, ResolveError};
use crate::respond::{self, Question};
use crate::rpz::{Disposition, PolicyAnswer, Rpz};
use crate::wire;

impl WorkerCtx {
    /// Policy for the query's name, before any cache: `None` answers as usual (no rule, a
    /// PASSTHRU, or TCP-only over TCP).
    pub(super) fn query_policy(
        self: &Rc<Self>,
        rpz: &Rpz,
        msg: &[u8],
        q: &wire::Query,
        peer: SocketAddr,
        reply_to: ReplyTo,
        out: &mut Vec<u8>,
    ) -> Option<Handled> {
        let mut buf = [0u8; wire::MAX_NAME_LEN];
        let n = wire::lowercase_name(msg.get(q.qname.clone())?, &mut buf);
        let hit = rpz.check_qname(&buf[..n])?;
        let question = Question::parse(msg, q)?;
        match rpz.disposition(&hit, &question.name, question.qtype, Vec::new()) {
            Disposition::Passthru => None,
            Disposition::Drop => Some(Handled::Dropped),
            Disposition::TcpOnly => match reply_to {
                ReplyTo::Udp { .. } => {
                    respond::truncated(out, msg, q, self.settings.edns_udp_size);
                    Some(Handled::Reply)
                }
                ReplyTo::Tcp { .. } => None,
            },
            // The garden's target is resolved like a miss: not for a query without RD
            // (it must not make the resolver go out), nor while the worker sheds misses.
            Disposition::Answer(p) => match p.chase.clone().filter(|_| q.rd() && !self.shedding.get()) {
                Some(target) => Some(self.chase(msg, q, question, p, target, peer, reply_to, out)),
                None => {
                    respond::policy(out, msg, q, &question, &p, self.settings.edns_udp_size);
                    Some(Handled::Reply)
                }
            },
        }
    }

    /// A local-data CNAME (a walled garden): its target resolved like any cache miss (a
    /// turn of the worker's capacity and the client's share), its answer after the CNAME.
    #[allow(clippy::too_many_arguments, reason = "one query's parts, as handle_query has them")]
    fn chase(
        self: &Rc<Self>,
        msg: &[u8],
        q: &wire::Query,
        question: Question,
        p: PolicyAnswer,
        target: Name,
        peer: SocketAddr,
        reply_to: ReplyTo,
        out: &mut Vec<u8>,
    ) -> Handled {
        if let Err(limit) = self.take_resolution(peer.ip()) {
            let result = Err(ResolveError::LimitExceeded(limit));
            respond::build(out, msg, q, &question, &result, self.settings.edns_udp_size);
            return Handled::Reply;
        }
        let w = Waiter { peer, msg: msg.to_vec(), q: q.clone(), question, reply_to, start: self.reactor.now() };
        let ctx = Rc::clone(self);
        self.executor.spawn(async move {
            let result = ctx.resolver.resolve(&target, w.question.qtype).await;
            let mut p = p;
            match &result {
                Ok(a) if !matches!(a.security, crate::dnssec::Security::Bogus(_)) => {
                    p.answers.extend(a.answers.iter().cloned());
                    p.rcode = a.rcode;
                }
                _ => {}
            }
            ctx.resolutions.set(ctx.resolutions.get() - 1);
            ctx.client_load.borrow_mut().release(w.peer.ip());
            let mut out = Vec::new();
            respond::policy(&mut out, &w.msg, &w.q, &w.question, &p, ctx.settings.edns_udp_size);
            ctx.deliver(w, out);
        });
        Handled::Spawned
    }

    /// The response to one client query from a resolution's result, with answer policy
    /// (the CNAME chain's names, the addresses) applied. Returns how long it may be kept in
    /// the packet cache (0 for a rewrite), or `None` when nothing is to be sent (DROP).
    /// `udp`: the answer goes over UDP (a TCP-only rule truncates it).
    pub(super) fn respond(
        &self,
        out: &mut Vec<u8>,
        msg: &[u8],
        q: &wire::Query,
        question: &Question,
        result: &Result<Answer, ResolveError>,
        udp: bool,
    ) -> Option<u32> {
        let udp_size = self.settings.edns_udp_size;
        if let (Some(rpz), Ok(answer)) = (self.shared().rpz.as_deref(), result)
            && (q.cd() || !matches!(answer.security, crate::dnssec::Security::Bogus(_)))
            && let Some((hit, at, keep)) = rpz.check_answer(&question.name, answer, &|n| self.nameservers_of(n))
        {
            let prefix = answer.answers[..keep.min(answer.answers.len())].to_vec();
            match rpz.disposition(&hit, &at, question.qtype, prefix) {
                Disposition::Passthru => {}
                Disposition::Drop => return None,
                Disposition::TcpOnly if udp => {
                    respond::truncated(out, msg, q, udp_size);
                    return Some(0);
                }
                Disposition::TcpOnly => {
                    respond::build(out, msg, q, question, result, udp_size);
                    return Some(0);
                }
                Disposition::Answer(p) => {
                    respond::policy(out, msg, q, question, &p, udp_size);
                    return Some(0);
                }
            }
        }
        Some(respond::build(out, msg, q, question, result, udp_size))
    }

    /// The nameservers of the zone `name` is in, as the record cache knows them (the
    /// deepest cached NS RRset at or above it, at most 20 names; never a TLD's or the
    /// root's, whose servers every name shares) and their cached addresses (at most four
    /// of each family per name, 64 in all: an authority's huge RRsets cost no more):
    /// what RPZ-NSDNAME and RPZ-NSIP triggers match.
    pub(super) fn nameservers_of(&self, name: &Name) -> (Vec<Name>, Vec<std::net::IpAddr>) {
        use hickory_proto::rr::{RData, RecordType};
        let records = &self.shared().records;
        let now = self.reactor.now();
        let mut cur = name.clone();
        while cur.num_labels() > 1 {
            if let Some(hit) = records.get(&cur, u16::from(RecordType::NS), now) {
                let names: Vec<Name> = hit
                    .data
                    .records()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NS(ns) => Some(ns.0.clone()),
                        _ => None,
                    })
                    .take(20)
                    .collect();
                if !names.is_empty() {
                    let mut addrs: Vec<std::net::IpAddr> = Vec::new();
                    for n in &names {
                        for t in [RecordType::A, RecordType::AAAA] {
                            let Some(hit) = records.get(n, u16::from(t), now) else { continue };
                            let found = hit.data.records().iter().filter_map(|r| match &r.data {
                                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                                RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                                _ => None,
                            });
                            for a in found.take(4) {
                                if addrs.len() < 64 && !addrs.contains(&a) {
                                    addrs.push(a);
                                }
                            }
                        }
                    }
                    return (names, addrs);
                }
            }
            cur = cur.base_name();
        }
        (Vec::new(), Vec::new())
    }

    /// Empties the packet cache when a policy zone changed since the last look (once per
    /// loop turn: one atomic load).
    pub(super) fn follow_policy_changes(&self, seen: &mut u64) {
        if let Some(rpz) = &self.shared().rpz {
            let g = rpz.generation();
            if g != *seen {
                *seen = g;
                self.packet_cache.borrow_mut().flush(None, false);
            }
        }
    }
}

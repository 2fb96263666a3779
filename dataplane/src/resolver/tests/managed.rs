//! RFC 5011 trust anchor maintenance with its 30-day defaults, on a fake clock: DNSKEY
//! RRsets signed with real keys (ECDSA P-256) handed to the managed anchors as a fetch
//! would, day after day, and what the validator is given to trust after each.

use std::sync::Arc;

use super::signed::{self, ZoneKey};
use super::*;
use crate::dnssec::TrustAnchors;
use crate::dnssec::anchors::{Anchor, Source};
use crate::dnssec::managed::{KeyState, ManagedAnchors, Timers};
use crate::dnssec::rdata::{Dnskey, Ds};

const DAY: u64 = 86_400;
/// The root's DNSKEY TTL (2 days): a fetch a day (section 2.3).
const TTL: u32 = 172_800;
const T0: u64 = 1_796_083_200;

fn root() -> Name {
    Name::root()
}

/// The DNSKEY RRset of `keys`, signed by each of `signers`, valid for two weeks from `now`.
fn rrset(keys: &[&ZoneKey], signers: &[&ZoneKey], now: u64) -> Vec<Record> {
    let set: Vec<Record> = keys.iter().map(|k| k.dnskey_with_ttl(TTL)).collect();
    let refs: Vec<&Record> = set.iter().collect();
    let window = ((now - DAY) as u32, (now + 14 * DAY) as u32);
    let sigs: Vec<Record> = signers.iter().map(|k| k.sign(&refs, window)).collect();
    set.into_iter().chain(sigs).collect()
}

/// Managed anchors seeded with the DS of `k` (as the built-in root anchors are).
fn seeded(k: &ZoneKey) -> (ManagedAnchors, Arc<arc_swap::ArcSwapOption<TrustAnchors>>) {
    let seed = TrustAnchors::new(
        vec![Anchor { zone: root(), ds: vec![Ds::parse(&k.ds_rdata()).unwrap()], keys: Vec::new() }],
        Source::BuiltIn,
    );
    let published = Arc::new(arc_swap::ArcSwapOption::empty());
    (ManagedAnchors::new(&seed, Timers::default(), true, published.clone(), T0), published)
}

/// The keys the validator trusts for the root now (`None`: the root has no anchor).
fn trusted(published: &arc_swap::ArcSwapOption<TrustAnchors>) -> Option<(Vec<u16>, usize)> {
    let anchors = published.load_full()?;
    let a = anchors.at(&root())?;
    Some((a.keys.iter().map(|k| k.key_tag).collect(), a.ds.len()))
}

fn state(m: &ManagedAnchors, tag: u16) -> Option<KeyState> {
    m.view()[0].keys.iter().find(|(t, _)| *t == tag).map(|(_, s)| *s)
}

/// A whole KSK rollover with the defaults: the new key is trusted on the first fetch 30
/// days after it was first seen (not a day earlier), the old one is revoked at once by
/// its self-signed revocation and forgotten 30 days later, and the state saved on the way
/// stands in for the seed after a restart.
#[test]
fn a_root_ksk_rollover_takes_the_30_day_hold_downs() {
    let (k1, k2) = (ZoneKey::new(root()), ZoneKey::new(root()));
    let (m, published) = seeded(&k1);
    // The seed DS anchors the root until the first fetch.
    assert_eq!(trusted(&published), Some((vec![], 1)));
    assert_eq!(m.due(T0), None, "nothing fetched at start: the seed stands for the refresh floor");
    assert_eq!(m.due(T0 + 3_600), Some(root()));
    assert_eq!(m.due(T0 + 3_600), None, "one fetch of a zone at a time");
    let o = m.observe(&root(), Some(&rrset(&[&k1], &[&k1], T0)), T0);
    assert!(o.validated);
    assert_eq!(o.next_in, DAY, "half the DNSKEY TTL");
    assert_eq!(trusted(&published), Some((vec![k1.tag()], 0)), "the DS's key, as a key, from now on");

    // Day 1: KSK-2 is published beside KSK-1, signed by KSK-1.
    let added = T0 + DAY;
    m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1], added)), added);
    assert_eq!(state(&m, k2.tag()), Some(KeyState::AddPend));
    let mut day = 2;
    while state(&m, k2.tag()) == Some(KeyState::AddPend) {
        let now = T0 + day * DAY;
        assert!(m.due(now).is_some(), "a fetch every day");
        m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1], now)), now);
        if state(&m, k2.tag()) == Some(KeyState::AddPend) {
            assert_eq!(trusted(&published), Some((vec![k1.tag()], 0)), "day {day}: not trusted while pending");
        }
        day += 1;
        assert!(day < 60);
    }
    assert_eq!(day - 1, 31, "trusted on the first fetch 30 days after day 1");
    assert_eq!(state(&m, k2.tag()), Some(KeyState::Valid));
    assert_eq!(trusted(&published), Some((vec![k1.tag(), k2.tag()], 0)));

    // Day 40: KSK-1 is revoked, and signs the RRset itself with the REVOKE bit set.
    let revoked_at = T0 + 40 * DAY;
    let k1_tag = k1.tag();
    let mut k1 = k1;
    k1.revoke();
    m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1, &k2], revoked_at)), revoked_at);
    assert_eq!(state(&m, k1_tag), Some(KeyState::Revoked));
    assert_eq!(trusted(&published), Some((vec![k2.tag()], 0)), "a revoked key is trusted no more");

    // Saved now and loaded by a restart seeded with KSK-1's DS: KSK-2 anchors the root.
    let dir = std::env::temp_dir().join(format!("adox-rfc5011-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("managed-anchors.json");
    m.save(&path).unwrap();
    let seed_key = Dnskey::parse(&{
        let mut r = k1.rdata.clone();
        r[1] &= !0x80;
        r
    })
    .unwrap();
    let seed = TrustAnchors::new(
        vec![Anchor { zone: root(), ds: vec![Ds::parse(&k1_ds(&seed_key)).unwrap()], keys: Vec::new() }],
        Source::BuiltIn,
    );
    let published2 = Arc::new(arc_swap::ArcSwapOption::empty());
    let restarted = ManagedAnchors::new(&seed, Timers::default(), true, published2.clone(), revoked_at + 1);
    assert!(restarted.load(&path, revoked_at + 1).unwrap(), "the state is the seed's own");
    assert_eq!(trusted(&published2), Some((vec![k2.tag()], 0)));

    // The revoked key is remembered for the remove hold-down, then forgotten.
    for d in 41..70 {
        let now = T0 + d * DAY;
        m.observe(&root(), Some(&rrset(&[&k2], &[&k2], now)), now);
        assert_eq!(state(&m, k1_tag), Some(KeyState::Revoked), "day {d}");
    }
    let now = T0 + 70 * DAY;
    let o = m.observe(&root(), Some(&rrset(&[&k2], &[&k2], now)), now);
    assert_eq!(state(&m, k1_tag), None);
    assert!(o.changes.contains(&(k1_tag, None)));
    assert_eq!(trusted(&published), Some((vec![k2.tag()], 0)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The DS (SHA-256) of `key` at the root.
fn k1_ds(key: &Dnskey) -> Vec<u8> {
    let mut rdata = key.key_tag.to_be_bytes().to_vec();
    rdata.extend_from_slice(&[key.algorithm, 2]);
    rdata.extend(crate::dnssec::crypto::ds_digest(2, &[0], &key.rdata).unwrap());
    rdata
}

/// What an attacker (or a broken zone) cannot do: add a key the trusted keys did not
/// sign, revoke a key without its own signature, or get a key trusted that was seen only
/// for part of the hold-down. A key that merely disappears stays trusted (Missing).
#[test]
fn only_the_trusted_keys_and_the_full_hold_down_change_trust() {
    let (k1, k2, k3) = (ZoneKey::new(root()), ZoneKey::new(root()), ZoneKey::new(root()));
    let (m, published) = seeded(&k1);
    m.observe(&root(), Some(&rrset(&[&k1], &[&k1], T0)), T0);

    // KSK-3 signs an RRset with itself only: not trusted, nothing learnt, retry sooner.
    let now = T0 + DAY;
    let o = m.observe(&root(), Some(&rrset(&[&k1, &k3], &[&k3], now)), now);
    assert!(!o.validated);
    assert_eq!(state(&m, k3.tag()), None);
    assert_eq!(o.next_in, 17_280, "the retry time: a tenth of the TTL");
    // A fetch that failed: the same.
    assert_eq!(m.observe(&root(), None, now).next_in, 17_280);

    // A revocation of KSK-1 signed only by a key that is not trusted: ignored.
    let mut fake_revoked = Dnskey::parse(&k1.rdata).unwrap().rdata;
    fake_revoked[1] |= 0x80;
    let mut set = rrset(&[&k3], &[&k3], now);
    set.push(signed::raw(&root(), TTL, RecordType::DNSKEY, fake_revoked));
    m.observe(&root(), Some(&set), now);
    assert_eq!(state(&m, k1.tag()), Some(KeyState::Valid));

    // KSK-2 is seen for 20 days, then gone: forgotten, never trusted.
    for d in 2..=22 {
        let now = T0 + d * DAY;
        m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1], now)), now);
    }
    assert_eq!(state(&m, k2.tag()), Some(KeyState::AddPend));
    let now = T0 + 23 * DAY;
    m.observe(&root(), Some(&rrset(&[&k1], &[&k1], now)), now);
    assert_eq!(state(&m, k2.tag()), None);
    // Back after the 30 days would have run out: pending afresh, not trusted.
    let now = T0 + 40 * DAY;
    m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1], now)), now);
    assert_eq!(state(&m, k2.tag()), Some(KeyState::AddPend));
    assert_eq!(trusted(&published), Some((vec![k1.tag()], 0)));

    // KSK-1 removed without a revocation once KSK-2 is trusted: Missing, still trusted.
    let later = T0 + 71 * DAY;
    m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k1], later)), later);
    assert_eq!(state(&m, k2.tag()), Some(KeyState::Valid));
    m.observe(&root(), Some(&rrset(&[&k2], &[&k2], later + DAY)), later + DAY);
    assert_eq!(state(&m, k1.tag()), Some(KeyState::Missing));
    assert_eq!(trusted(&published), Some((vec![k1.tag(), k2.tag()], 0)));
    // And back: Valid again.
    m.observe(&root(), Some(&rrset(&[&k1, &k2], &[&k2], later + 2 * DAY)), later + 2 * DAY);
    assert_eq!(state(&m, k1.tag()), Some(KeyState::Valid));
}

/// The owner revokes its only key: the root has no anchor any more (its names are
/// insecure, not bogus), and the caches are to be flushed.
#[test]
fn revoking_the_last_key_leaves_the_zone_unanchored() {
    let mut k1 = ZoneKey::new(root());
    let (m, published) = seeded(&k1);
    m.observe(&root(), Some(&rrset(&[&k1], &[&k1], T0)), T0);
    assert!(!m.take_zone_dropped());
    k1.revoke();
    m.observe(&root(), Some(&rrset(&[&k1], &[&k1], T0 + DAY)), T0 + DAY);
    assert_eq!(trusted(&published), None);
    assert!(published.load().as_ref().unwrap().closest(&n("www.example.")).is_none());
    assert!(m.take_zone_dropped());
}

/// The state file belongs to its seed: another seed starts afresh, a damaged or edited
/// file is refused whole.
#[test]
fn the_state_file_is_checked_before_it_is_used() {
    let (k1, k2) = (ZoneKey::new(root()), ZoneKey::new(root()));
    let (m, _) = seeded(&k1);
    m.observe(&root(), Some(&rrset(&[&k1], &[&k1], T0)), T0);
    assert!(m.take_changed());
    let dir = std::env::temp_dir().join(format!("adox-rfc5011-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("managed-anchors.json");
    m.save(&path).unwrap();
    let (other, other_published) = seeded(&k2);
    assert!(!other.load(&path, T0).unwrap(), "another seed's state is not used");
    assert_eq!(trusted(&other_published), Some((vec![], 1)));
    let (same, _) = seeded(&k1);
    assert!(same.load(&path, T0).unwrap());
    // Others may not write it: it decides what is trusted.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(same.load(&path, T0).unwrap_err().to_string().contains("others may write it"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // A pending key whose hold-down is shorter than the configured one: refused.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut pending = v.clone();
    pending["zones"][0]["keys"][0]["state"] = "addpend".into();
    pending["zones"][0]["keys"][0]["until"] = (T0 + 60).into();
    std::fs::write(&path, pending.to_string()).unwrap();
    assert!(same.load(&path, T0).unwrap_err().to_string().contains("timers that no fetch set"));
    let mut twice = v;
    let key = twice["zones"][0]["keys"][0].clone();
    twice["zones"][0]["keys"].as_array_mut().unwrap().push(key);
    std::fs::write(&path, twice.to_string()).unwrap();
    assert!(same.load(&path, T0).unwrap_err().to_string().contains("twice"));
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert!(same.load(&path, T0).is_err(), "half a file");
    let key_hex: String = k1.rdata.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, text.replace(&key_hex, "0101030d00")).unwrap();
    let e = same.load(&path, T0).unwrap_err().to_string();
    assert!(e.contains("not that DNSKEY"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

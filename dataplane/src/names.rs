//! Name helpers shared by the caches and the resolver.

use hickory_proto::rr::Name;

/// Whether wire-form `name` equals `zone` or lies below it (both lowercase, uncompressed).
pub(crate) fn wire_is_subdomain(name: &[u8], zone: &[u8]) -> bool {
    if zone.len() > name.len() {
        return false;
    }
    // Walk name's labels; a suffix only counts on a label boundary.
    let mut at = 0;
    loop {
        if name[at..] == *zone {
            return true;
        }
        let Some(&len) = name.get(at) else { return false };
        if len == 0 {
            return false;
        }
        at += 1 + usize::from(len);
        if at > name.len() {
            return false;
        }
    }
}

/// `name` lowercased and fully qualified: the form every cache key uses.
pub(crate) fn canonical(name: &Name) -> Name {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

/// Whether `name` equals `zone` or lies below it (case-insensitive).
pub(crate) fn is_at_or_below(name: &Name, zone: &Name) -> bool {
    zone.zone_of(name)
}

/// Labels of `name`, a leading `*` included (hickory's `num_labels` leaves it out, while
/// `trim_to` and `iter` count it: all label arithmetic here uses this).
pub(crate) fn labels(name: &Name) -> usize {
    name.iter().count()
}

/// Whether `name` lies strictly below `zone`.
pub(crate) fn is_below(name: &Name, zone: &Name) -> bool {
    labels(name) > labels(zone) && zone.zone_of(name)
}

/// The parent of `name` (root stays root).
pub(crate) fn parent(name: &Name) -> Name {
    name.base_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_subdomain_respects_label_boundaries() {
        assert!(wire_is_subdomain(b"\x03www\x03lab\x00", b"\x03lab\x00"));
        assert!(wire_is_subdomain(b"\x03lab\x00", b"\x03lab\x00"));
        assert!(wire_is_subdomain(b"\x03lab\x00", b"\x00"));
        assert!(!wire_is_subdomain(b"\x04xlab\x00", b"\x03lab\x00"));
        assert!(!wire_is_subdomain(b"\x03lab\x00", b"\x03www\x03lab\x00"));
        assert!(!wire_is_subdomain(b"\x05ab", b"\x00"), "malformed input never panics");
    }

    #[test]
    fn name_relations() {
        let zone: Name = "Lab.".parse().unwrap();
        let www: Name = "www.lab.".parse().unwrap();
        assert!(is_at_or_below(&www, &zone) && is_below(&www, &zone));
        assert!(is_at_or_below(&zone, &zone) && !is_below(&zone, &zone));
        assert_eq!(canonical(&zone).to_ascii(), "lab.");
        assert_eq!(parent(&www).to_ascii(), "lab.");
        let star: Name = "*.x.lab.".parse().unwrap();
        assert_eq!(labels(&star), 3);
        assert!(is_below(&star, &"x.lab.".parse().unwrap()));
    }
}

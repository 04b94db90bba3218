//! Fresh lease ids and generated names, from the operating system's CSPRNG.

use mytunnel_core::{LeaseId, Slug};
use rand::RngCore;

/// A new lease id: `lease_` + 16 base32 characters (80 bits from a CSPRNG).
pub fn new_lease_id() -> LeaseId {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    LeaseId::from_random_bytes(bytes)
}

/// `count` readable candidate names (`brisk-otter-42` style); the store takes the first
/// that is free.
pub fn generated_slug_candidates(count: usize) -> Vec<Slug> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let mut bytes = [0u8; 4];
            rng.fill_bytes(&mut bytes);
            Slug::generated(bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_and_valid() {
        let ids: HashSet<String> = (0..1000).map(|_| new_lease_id().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.parse::<LeaseId>().is_ok()));
    }

    #[test]
    fn candidates_are_valid_slugs() {
        let c = generated_slug_candidates(8);
        assert_eq!(c.len(), 8);
        assert!(c
            .iter()
            .all(|s| s.as_str().parse::<Slug>().as_ref() == Ok(s)));
    }
}

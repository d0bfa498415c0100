//! Rollouts as a plan: the order an app's services deploy in, and the
//! batches that replace a service's replicas within its surge and
//! unavailability budget. Pure; the deploy controller carries them out.

use std::collections::BTreeSet;

/// The services in the order they deploy: a service after those it
/// depends on (`depends_on` says which), else by name.
pub fn dependency_order<'a, 'b>(
    depends_on: impl Fn(&str) -> &'b [String],
    services: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let wanted: BTreeSet<String> = services.cloned().collect();
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while order.len() < wanted.len() {
        let before = order.len();
        for name in &wanted {
            if placed.contains(name) {
                continue;
            }
            let ready = depends_on(name)
                .iter()
                .all(|d| !wanted.contains(d) || placed.contains(d));
            if ready {
                order.push(name.clone());
                placed.insert(name.clone());
            }
        }
        if order.len() == before {
            // A cycle (validation refuses them): the rest by name.
            order.extend(wanted.iter().filter(|n| !placed.contains(*n)).cloned());
            break;
        }
    }
    order
}

/// One batch of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Old replicas stopped before the new ones start (max-unavailable).
    pub stop_first: u32,
    /// New replicas started, then waited for until healthy.
    pub start: u32,
    /// Old replicas retired once the new ones are healthy.
    pub retire: u32,
}

/// The surge a rollout uses: with no surge and no unavailability it could
/// never start a replica (validation refuses that; kick.toml could still
/// say it), so one at a time.
pub fn effective_surge(surge: u32, unavailable: u32) -> u32 {
    if surge == 0 && unavailable == 0 {
        1
    } else {
        surge
    }
}

/// The batches that replace `old` replicas by `target` new ones: each
/// starts at most `surge` above the count (plus what it stopped first),
/// stops at most `unavailable` before their replacements are healthy, and
/// retires old ones only once the new ones are healthy.
pub fn batches(old: u32, target: u32, surge: u32, unavailable: u32) -> Vec<Batch> {
    let surge = effective_surge(surge, unavailable);
    let (mut old, mut new) = (old, 0u32);
    let mut out = Vec::new();
    while old > 0 || new < target {
        let stop_first = unavailable.min(old);
        old -= stop_first;
        let missing = target.saturating_sub(new);
        let start = if old == 0 {
            missing
        } else {
            missing.min(surge.saturating_add(stop_first))
        };
        if start == 0 {
            // Only old replicas above the count are left.
            out.push(Batch {
                stop_first,
                start: 0,
                retire: old,
            });
            break;
        }
        new += start;
        let retire = (old + new).saturating_sub(target).min(old);
        old -= retire;
        out.push(Batch {
            stop_first,
            start,
            retire,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn services_deploy_after_what_they_depend_on() {
        let deps: std::collections::BTreeMap<String, Vec<String>> =
            [("web".to_owned(), vec!["api".to_owned()])].into();
        let depends_on = |name: &str| deps.get(name).map_or(&[][..], Vec::as_slice);
        let names: Vec<String> = vec!["web".into(), "api".into()];
        assert_eq!(dependency_order(depends_on, names.iter()), ["api", "web"]);
    }

    #[test]
    fn default_batches_start_one_then_retire_one() {
        let b = |stop_first, start, retire| Batch {
            stop_first,
            start,
            retire,
        };
        assert_eq!(batches(3, 3, 1, 0), [b(0, 1, 1), b(0, 1, 1), b(0, 1, 1)]);
        // A first deploy starts everything at once.
        assert_eq!(batches(0, 3, 1, 0), [b(0, 3, 0)]);
        // max-unavailable stops first.
        assert_eq!(batches(4, 4, 0, 2), [b(2, 2, 0), b(2, 2, 0)]);
        // Both zero would never start: one at a time.
        assert_eq!(batches(2, 2, 0, 0), [b(0, 1, 1), b(0, 1, 1)]);
    }

    proptest! {
        /// Every rollout ends with the count on the new release; never
        /// more than `surge` above the count, never fewer serving than the
        /// count less `unavailable`.
        #[test]
        fn rollouts_keep_their_bounds(old in 0u32..12, target in 0u32..12, surge in 0u32..5, unavailable in 0u32..5) {
            let effective_surge = effective_surge(surge, unavailable);
            let (mut o, mut n) = (old, 0u32);
            let (mut stopped, mut started) = (0, 0);
            for batch in batches(old, target, surge, unavailable) {
                o -= batch.stop_first;
                prop_assert!(o + n + unavailable >= old.min(target), "too few serving: {o} + {n}");
                prop_assert!(o + n + batch.start <= old.max(target) + effective_surge + batch.stop_first, "too many at once");
                n += batch.start;
                o -= batch.retire;
                prop_assert!(o + n + unavailable >= old.min(target));
                stopped += batch.stop_first + batch.retire;
                started += batch.start;
            }
            prop_assert_eq!((o, n), (0, target));
            prop_assert_eq!(stopped, old);
            prop_assert_eq!(started, target);
        }
    }
}

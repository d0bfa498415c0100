//! Every app's deploys as the leader knows them: the history read from the
//! bucket, and the release rolling out.

use std::collections::BTreeMap;

use crate::spec::release::{Outcome, Release};

/// The deploys kick knows: each app's history, newest last.
#[derive(Debug, Default)]
pub struct Deploys {
    pub history: BTreeMap<String, Vec<Release>>,
    /// Whether the history was read from the bucket.
    pub loaded: bool,
}

impl Deploys {
    /// The release of `app` rolling out now.
    pub fn active(&self, app: &str) -> Option<&Release> {
        self.history
            .get(app)?
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Running)
    }

    /// The release each of `app`'s services runs: the images of the last
    /// successful release that named it.
    pub fn current(&self, app: &str) -> BTreeMap<String, (u64, String)> {
        let mut current = BTreeMap::new();
        for release in self.history.get(app).into_iter().flatten() {
            if release.outcome == Outcome::Succeeded {
                for (service, image) in &release.images {
                    current.insert(service.clone(), (release.id, image.clone()));
                }
            }
        }
        current
    }

    pub fn release_mut(&mut self, app: &str, id: u64) -> Option<&mut Release> {
        self.history.get_mut(app)?.iter_mut().find(|r| r.id == id)
    }
}

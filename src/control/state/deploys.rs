//! Every app's deploys as the leader knows them: the history read from the
//! bucket, and the release rolling out.

use std::collections::BTreeMap;

use crate::spec::release::{Outcome, Release};

/// How many deploys of an app the history keeps. ECR's lifecycle rule
/// keeps 30 images a service, so every release whose image can still be
/// pulled is kept too.
pub const HISTORY_KEPT: usize = 100;

/// The deploys kick knows: each app's history, newest last.
#[derive(Debug, Default)]
pub struct Deploys {
    pub history: BTreeMap<String, Vec<Release>>,
    /// The apps whose history this leader read, each with the version
    /// (ETag) of the object it read or last wrote (`None`: no object
    /// yet). A write names it, so a stale writer fails instead of
    /// overwriting; an app not here is read before it deploys.
    pub read: BTreeMap<String, Option<String>>,
    /// The apps whose history could not be read, with why.
    pub unreadable: BTreeMap<String, String>,
    /// This leadership, as its writes of the history name it (random).
    pub writer: u64,
}

impl Deploys {
    /// Whether `app`'s history was read (or there is no bucket to read).
    pub fn is_read(&self, app: &str) -> bool {
        self.read.contains_key(app)
    }

    /// Adds a release to `app`'s history, dropping the oldest beyond
    /// [`HISTORY_KEPT`] but never a release a service still runs (its
    /// last successful one), which rollbacks and a new leader need.
    pub fn record(&mut self, release: Release) {
        let app = release.app.clone();
        self.history.entry(app.clone()).or_default().push(release);
        let running: std::collections::BTreeSet<u64> =
            self.current(&app).values().map(|(id, _)| *id).collect();
        let history = self.history.entry(app).or_default();
        while history.len() > HISTORY_KEPT {
            match history.iter().position(|r| !running.contains(&r.id)) {
                Some(oldest) => {
                    history.remove(oldest);
                }
                None => break,
            }
        }
    }

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
            // A restart ran the images it found: what runs is still the
            // release that put them there (its number, its commit).
            if release.placed_images() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: u64, outcome: Outcome, service: &str) -> Release {
        Release {
            id,
            app: "shop".into(),
            commit: None,
            by: None,
            rollback_of: None,
            started: id,
            finished: Some(id),
            outcome,
            images: [(
                service.to_owned(),
                format!("r/huxley-c/shop@sha256:{id:064}"),
            )]
            .into(),
            sources: BTreeMap::new(),
            previous: BTreeMap::new(),
            restarted: Vec::new(),
            replaced: 0,
            reason: None,
            events: Vec::new(),
        }
    }

    /// Regression: trimming dropped the oldest release whatever it was,
    /// so a long run of failed deploys lost the release that runs and a
    /// new leader started the service's replicas on nothing.
    #[test]
    fn trimming_keeps_each_services_last_successful_release() {
        let mut deploys = Deploys::default();
        deploys.record(release(1, Outcome::Succeeded, "web"));
        deploys.record(release(2, Outcome::Succeeded, "api"));
        for id in 3..=(HISTORY_KEPT as u64 + 50) {
            deploys.record(release(id, Outcome::RolledBack, "web"));
        }
        let history = &deploys.history["shop"];
        assert_eq!(history.len(), HISTORY_KEPT);
        assert_eq!(history[0].id, 1, "web's running release is kept");
        assert_eq!(history[1].id, 2, "api's running release is kept");
        assert_eq!(history.last().map(|r| r.id), Some(HISTORY_KEPT as u64 + 50));
        let current = deploys.current("shop");
        assert_eq!(current["web"].0, 1);
        assert_eq!(current["api"].0, 2);
        // A newer success lets the old one go.
        deploys.record(release(500, Outcome::Succeeded, "web"));
        assert_eq!(deploys.history["shop"][0].id, 2);
        assert_eq!(deploys.history["shop"].len(), HISTORY_KEPT);
    }
}

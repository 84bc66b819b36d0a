//! Locate: the one remote finder of every pass. Where to look is a pure choice ([`search`]): by
//! the id this resource recorded, else by its adoption annotation, else by name. How an answer
//! is read is one policy ([`locate`]): "not found" is an answer; anything else the control plane
//! refuses (a key refused, a redirect) is an error that says so, never "it does not exist".
//! Talks to the control plane.

use super::error::Error;
use super::ownership::Route;
use crate::controlplane::{self, RemoteEnvironment};

/// Where a pass looks for its remote environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Search {
    /// By id, found by `route`.
    Id { id: String, route: Route },
    /// By name: the organisation's list (names are unique per organisation).
    Name(String),
    /// Nowhere: nothing is recorded and nothing asked for; a Full pass creates first (a 409 then
    /// looks by name), which costs one call instead of two.
    Nowhere,
}

/// What the pass is about, as far as looking goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looking {
    /// managementPolicy Full.
    ToManage,
    /// managementPolicy Observe.
    ToObserve,
    /// Being deleted.
    ToDelete,
}

/// What an adoption annotation asks, as [`search`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked<'a> {
    /// The `kubiya.ai/environment-id` annotation, trimmed, if set.
    pub id: Option<&'a str>,
    /// The status still records that the environment was observed: managing it now takes it
    /// over, as an adoption would.
    pub was_observed: bool,
}

/// Where to look, from the id this resource recorded (`known`), what was asked, and the remote
/// name.
pub fn search(looking: Looking, known: Option<&str>, asked: Asked<'_>, name: &str) -> Search {
    let by_id = |id: &str, route| Search::Id { id: id.to_owned(), route };
    match (looking, known, asked.id) {
        // Observed until now: managing it takes it over, as an adoption would. (An annotation
        // naming the recorded id is no new request: consent is used once.)
        (Looking::ToManage, Some(id), _) if asked.was_observed => by_id(id, Route::Annotation),
        (Looking::ToManage, Some(id), _) => by_id(id, Route::Status),
        (Looking::ToManage, None, Some(a)) => by_id(a, Route::Annotation),
        (Looking::ToManage, None, None) => Search::Nowhere,
        (Looking::ToObserve, Some(id), _) => by_id(id, Route::Status),
        (Looking::ToObserve, None, Some(a)) => by_id(a, Route::Annotation),
        (Looking::ToObserve, None, None) => Search::Name(name.to_owned()),
        (Looking::ToDelete, Some(id), _) => by_id(id, Route::Status),
        (Looking::ToDelete, None, _) => Search::Name(name.to_owned()),
    }
}

/// What a search found.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per pass, moved on into the decision
pub enum Located {
    /// Not looked for ([`Search::Nowhere`]).
    NotSought,
    Found {
        remote: RemoteEnvironment,
        route: Route,
    },
    /// Looked for by `route`, and not there: `id` is the id looked for, if it was by id.
    Missing {
        route: Route,
        id: Option<String>,
    },
}

/// Carries out `search` with `cp`.
pub async fn locate(cp: &controlplane::Client, search: Search) -> Result<Located, Error> {
    match search {
        Search::Nowhere => Ok(Located::NotSought),
        // The control plane's ids are UUIDs, and it answers a malformed one with a 500: an
        // annotation that is not one names nothing, and is not sent.
        Search::Id { id, route } if route == Route::Annotation && !is_uuid(&id) => {
            Ok(Located::Missing { route, id: Some(id) })
        }
        Search::Id { id, route } => match cp.get(&id).await {
            Ok(remote) => Ok(Located::Found { remote, route }),
            Err(e) if e.is_not_found() => Ok(Located::Missing { route, id: Some(id) }),
            Err(source) => Err(Error::GetRemote { source }),
        },
        Search::Name(name) => {
            let all = cp.list(None).await.map_err(|source| Error::FindRemote { source })?;
            Ok(match all.into_iter().find(|r| r.name == name) {
                Some(remote) => Located::Found { remote, route: Route::Name },
                None => Located::Missing { route: Route::Name, id: None },
            })
        }
    }
}

/// Whether `id` has the shape of a UUID (8-4-4-4-12 hexadecimal digits).
pub fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "prod";

    fn asked(id: Option<&str>, was_observed: bool) -> Asked<'_> {
        Asked { id, was_observed }
    }

    fn id(id: &str, route: Route) -> Search {
        Search::Id { id: id.into(), route }
    }

    /// Every row: (looking, recorded id, annotation, was observed) → where to look.
    #[test]
    fn the_search_table() {
        use Looking::*;
        use Route::*;
        let rows = [
            (ToManage, Some("k"), None, false, id("k", Status)),
            (ToManage, Some("k"), Some("k"), false, id("k", Status)),
            (ToManage, Some("k"), Some("other"), false, id("k", Status)),
            (ToManage, Some("k"), None, true, id("k", Annotation)),
            (ToManage, None, Some("a"), false, id("a", Annotation)),
            (ToManage, None, None, false, Search::Nowhere),
            (ToManage, None, None, true, Search::Nowhere),
            (ToObserve, Some("k"), Some("a"), false, id("k", Status)),
            (ToObserve, None, Some("a"), false, id("a", Annotation)),
            (ToObserve, None, None, false, Search::Name(NAME.into())),
            (ToDelete, Some("k"), Some("a"), true, id("k", Status)),
            (ToDelete, None, Some("a"), false, Search::Name(NAME.into())),
            (ToDelete, None, None, false, Search::Name(NAME.into())),
        ];
        for (i, (looking, known, annotation, observed, want)) in rows.into_iter().enumerate() {
            assert_eq!(search(looking, known, asked(annotation, observed), NAME), want, "row {i}");
        }
    }

    #[test]
    fn uuids_are_told_by_their_shape() {
        assert!(is_uuid("5da3f05e-0000-4000-8000-000000000000"));
        assert!(is_uuid("5DA3F05E-aaaa-4000-8000-0123456789ab"));
        for bad in [
            "",
            "not-a-uuid",
            "5da3f05e-0000-4000-8000-00000000000",
            "5da3f05e-0000-4000-8000-0000000000000",
            "5da3f05e00004000800000000000000000",
            "5da3f05e-0000-4000-8000-00000000000g",
            "5da3f05e-0000-4000-8000-000000000000-1",
        ] {
            assert!(!is_uuid(bad), "{bad:?}");
        }
    }
}

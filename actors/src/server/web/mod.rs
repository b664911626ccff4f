//! The live web dashboard: static assets embedded in the binary (plain HTML, CSS and
//! JavaScript, no build step, nothing loaded from elsewhere) and the live feed
//! ([`events::Broadcaster`], Server-Sent Events).
//!
//! The page (`/`) shows every agent in one table fed by `/api/events` (a snapshot per
//! second); `#/agent/<id>` shows one agent's charts from `/api/agents/{id}/history` (CPU,
//! memory, cores, load, swap, each filesystem, network, disk I/O, all with one range and zoom)
//! and its live panels (temperatures, processes, the agent's own cost, the clock offset).
//! Charts are drawn on canvas by `app.js` itself. Every agent-controlled string goes into the
//! page as text (`textContent`), never as markup.

pub mod events;

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The dashboard page.
pub const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};

/// Every other embedded file, by the path it is served at.
const ASSETS: &[(&str, Asset)] = &[
    (
        "app.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("app.js"),
        },
    ),
    (
        "chart.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("chart.js"),
        },
    ),
    (
        "style.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_str!("style.css"),
        },
    ),
    (
        "favicon.svg",
        Asset {
            content_type: "image/svg+xml",
            body: include_str!("favicon.svg"),
        },
    ),
];

/// The embedded file served at `/static/<name>`, if any.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: every file the page links to is embedded, and the page loads nothing from
    /// another origin.
    #[test]
    fn page_links_only_embedded_assets() {
        for (name, _) in ASSETS {
            assert!(
                INDEX.body.contains(&format!("/static/{name}")),
                "{name} is embedded but not linked"
            );
        }
        for body in std::iter::once(INDEX.body).chain(ASSETS.iter().map(|(_, a)| a.body)) {
            let outside = body.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside.contains("http://") && !outside.contains("https://"));
        }
        assert!(asset("app.js").is_some());
        assert!(asset("../Cargo.toml").is_none());
    }
}

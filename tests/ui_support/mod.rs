//! The web UI as a browser without a script sees it: a session cookie, forms posted with
//! their CSRF token, redirects looked at rather than followed.

#![allow(dead_code)]

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::api_support::TestServer;

/// A workflow with typed parameters (one required, one sensitive), a step that fails
/// until retried with `times: 0`, and a fan-out over the targets that waits for signals.
pub const DEMO: &str = r#"
name: demo
description: parameters, a failing step, a fan-out waiting for signals
parameters:
  image: {type: string, required: true, description: the OS image URL}
  count: {type: integer, default: 2}
  root_password: {type: string, sensitive: true, description: the root password}
steps:
  - {name: prepare, action: noop}
  - name: flash
    action: fail
    input: {times: 1000, kind: bmc}
    needs: [prepare]
    retry: {max_attempts: 1}
  - name: callback
    action: await_signal
    for_each: {over: targets}
    needs: [prepare]
  - {name: done, action: noop, needs: [flash, callback]}
"#;

/// One browser's session with the UI.
pub struct Browser<'a> {
    pub server: &'a TestServer,
    pub http: reqwest::Client,
    pub cookie: String,
}

/// A page as fetched: status, where it redirects, and its HTML.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub html: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self
            .html
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.html));
        let rest = &self.html[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The page's text with tags and entities as a reader sees them (for `contains`).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in self.html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => {
                    in_tag = false;
                    out.push(' ');
                }
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&#x27;", "'")
            .replace("&#x2f;", "/")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn page_of(res: reqwest::Response) -> Page {
    let status = res.status();
    let header = |n| {
        res.headers()
            .get(n)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header(LOCATION);
    let set_cookie = header(SET_COOKIE);
    Page {
        status,
        location,
        set_cookie,
        html: res.text().await.unwrap(),
    }
}

/// `GET path` with no session.
pub async fn get_anon(s: &TestServer, path: &str) -> Page {
    page_of(http().get(s.url(path)).send().await.unwrap()).await
}

/// `POST path` of a form with no session.
pub async fn post_anon(s: &TestServer, path: &str, form: &[(&str, &str)]) -> Page {
    page_of(http().post(s.url(path)).form(form).send().await.unwrap()).await
}

impl<'a> Browser<'a> {
    /// Sign in with `token`; panics unless the UI answers with a session cookie.
    pub async fn sign_in(server: &'a TestServer, token: &str) -> Browser<'a> {
        let p = post_anon(server, "/ui/signin", &[("token", token), ("next", "")]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{p:?}");
        let set = p.set_cookie.expect("a session cookie");
        let cookie = set.split(';').next().unwrap().to_string();
        Browser {
            server,
            http: http(),
            cookie,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let res = self
            .http
            .get(self.server.url(path))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        page_of(res).await
    }

    /// Post a form as a page of this server would (no `Origin` header, as with a script).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_with(path, form, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut rb = self
            .http
            .post(self.server.url(path))
            .header(COOKIE, &self.cookie)
            .form(form);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        page_of(rb.send().await.unwrap()).await
    }

    /// This session's CSRF token, from any page.
    pub async fn csrf(&self) -> String {
        self.get("/ui/runs").await.csrf()
    }
}

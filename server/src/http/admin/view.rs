//! What every page shares: the layout (tabs, signed-in name, flash), the message page,
//! response headers, and time formatting.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::session::AdminSession;

/// The frame around every page.
pub struct Layout {
    /// Signed-in administrator; empty on the sign-in page (no tabs then).
    pub admin: String,
    /// The session's CSRF token, embedded in every form.
    pub csrf: String,
    pub flash: Option<String>,
    /// Which tab is current.
    pub tab: &'static str,
    pub title: String,
}

impl Layout {
    pub fn new(s: &AdminSession, tab: &'static str, title: impl Into<String>) -> Self {
        Self { admin: s.admin.clone(), csrf: s.csrf.clone(), flash: s.flash.clone(), tab, title: title.into() }
    }

    pub fn anonymous(title: impl Into<String>) -> Self {
        Self { admin: String::new(), csrf: String::new(), flash: None, tab: "", title: title.into() }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
struct MessagePage {
    l: Layout,
    text: String,
}

/// A page with a title and one paragraph.
pub fn message(title: &str, text: &str) -> impl axum::response::IntoResponse {
    MessagePage { l: Layout::anonymous(title), text: text.to_owned() }
}

/// "Are you sure?" before a destructive action; the form needs its box ticked.
#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub question: String,
    pub action: String,
    /// Extra hidden fields (name, value) the action needs.
    pub hidden: Vec<(String, String)>,
    pub button: String,
    pub back: String,
}

/// Headers on every console response: no framing, no outside resources, no caching of pages
/// that show secrets such as a fresh enrollment code.
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let csp =
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'";
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `2026-11-23 14:05:09 UTC` for Unix seconds.
pub fn datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A rough length of time: `45 s`, `12 min`, `3 h 5 min`, `2 days`.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        86_400..172_800 => "1 day".to_owned(),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_well() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(datetime(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(span(3 * 86_400), "3 days");
    }
}

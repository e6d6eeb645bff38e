//! The operation of a SERVER span, for ASCII input.
//!
//! `spanstream.enrich.operation` defines the rule with `str.upper`,
//! `str.isdigit` and `\d`, all of which follow Python's Unicode tables. Over
//! ASCII they agree with the plain byte tests used here; any other input is
//! handed back (`None`) so the caller runs the Python function itself.

const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
];

/// The `http_path` argument of `operation_name`, as far as Rust can judge it.
pub enum PathArg<'a> {
    /// A falsy value (None, "", 0, False, an empty list...).
    Falsy,
    /// A non-empty ASCII string.
    Ascii(&'a str),
    /// Anything else: only Python knows what it does.
    Other,
}

fn is_method_only(ascii_name: &str) -> bool {
    ascii_name.is_empty()
        || ascii_name == "HTTP"
        || HTTP_METHODS
            .iter()
            .any(|method| method.eq_ignore_ascii_case(ascii_name))
}

/// `operation_name(name, True, method, route, path)`, or `None` when the
/// answer depends on Unicode rules (the caller then asks Python).
pub fn server_operation(
    name: &str,
    http_method: Option<&str>,
    http_route: Option<&str>,
    path: PathArg<'_>,
) -> Option<String> {
    if !name.is_ascii() {
        return None;
    }
    if !is_method_only(name) {
        return Some(name.to_owned());
    }
    let chosen = match http_method {
        Some(method) if !method.is_empty() => method,
        _ if !name.is_empty() => name,
        _ => "HTTP",
    };
    if !chosen.is_ascii() {
        return None;
    }
    let method = chosen.to_ascii_uppercase();
    if let Some(route) = http_route.filter(|route| !route.is_empty()) {
        return Some(format!("{method} {route}"));
    }
    match path {
        PathArg::Falsy => Some(if name.is_empty() {
            method
        } else {
            name.to_owned()
        }),
        PathArg::Ascii(path) => Some(format!("{method} {}", template_path(path_of(path)))),
        PathArg::Other => None,
    }
}

fn path_of(url_or_target: &str) -> &str {
    match url_or_target.split_once("://") {
        Some((_, after_scheme)) => match after_scheme.find('/') {
            Some(slash) => &after_scheme[slash..],
            None => "/",
        },
        None => url_or_target,
    }
}

/// `template_path` over an ASCII path.
pub fn template_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let path = path.split('#').next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        out.push_str(template_segment(segment));
    }
    out
}

/// Python's `re.match(r"^...$")` also matches just before one trailing
/// newline; the patterns below are tested on the segment without it.
fn without_final_newline(segment: &str) -> &str {
    segment.strip_suffix('\n').unwrap_or(segment)
}

fn is_uuid(segment: &str) -> bool {
    let body = without_final_newline(segment).as_bytes();
    body.len() == 36
        && body.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

fn is_long_hex(segment: &str) -> bool {
    let body = without_final_newline(segment);
    body.len() >= 8 && body.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn template_segment(segment: &str) -> &str {
    if segment.is_empty() {
        segment
    } else if segment.bytes().all(|byte| byte.is_ascii_digit()) {
        "{num}"
    } else if is_uuid(segment) {
        "{uuid}"
    } else if is_long_hex(segment) {
        "{hex}"
    } else if segment.bytes().any(|byte| byte.is_ascii_digit()) {
        "{id}"
    } else {
        segment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_like_the_python_rule() {
        assert_eq!(template_path("/users/12345"), "/users/{num}");
        assert_eq!(
            template_path("/o/550e8400-e29b-41d4-a716-446655440000/items"),
            "/o/{uuid}/items"
        );
        assert_eq!(template_path("/blobs/deadbeefcafe0123"), "/blobs/{hex}");
        assert_eq!(template_path("/u/u12345/profile?tab=1"), "/u/{id}/profile");
        assert_eq!(template_path("/a/deadbeef\n"), "/a/{hex}");
        // Python's `$` matches before one final newline only, and with no
        // digit the segment is no {id} either: it stays as it is.
        assert_eq!(template_path("/a/deadbeef\n\n"), "/a/deadbeef\n\n");
    }

    #[test]
    fn method_only_names_take_route_or_path() {
        let op = |name, method, route, path| server_operation(name, method, route, path);
        assert_eq!(op("GET /x", None, None, PathArg::Falsy).unwrap(), "GET /x");
        assert_eq!(
            op("get", None, Some("/r"), PathArg::Falsy).unwrap(),
            "GET /r"
        );
        assert_eq!(
            op("HTTP", Some("put"), None, PathArg::Ascii("https://h/api/7")).unwrap(),
            "PUT /api/{num}"
        );
        assert_eq!(op("", None, None, PathArg::Falsy).unwrap(), "HTTP");
        assert!(op("ſ", None, None, PathArg::Falsy).is_none());
    }
}

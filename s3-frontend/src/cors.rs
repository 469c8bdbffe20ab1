//! CORS as S3 applies it: a bucket's rules (PutBucketCors) say which origins may use which
//! methods and request headers. A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered from the first rule that matches, without
//! a signature, on the S3 and the website endpoints alike; an actual request from an origin
//! a rule allows gets the `Access-Control-*` headers on its response, whatever its status.

use hangar_proto::model::{CorsConfig, CorsRule};
use http::{HeaderMap, HeaderValue, StatusCode};
use s3s::S3Result;
use s3s::dto::CORSRule;

use crate::errors::custom_error;
use crate::lookups::Lookups;

/// Most rules a configuration may hold, as in AWS.
pub const MAX_RULES: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// `pattern` with at most one `*`, which stands for any run of characters.
fn wildcard(pattern: &str, value: &str, case_insensitive: bool) -> bool {
    let (p, v) = if case_insensitive {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail),
    }
}

/// Whether `rule` lets `origin` use `method` with `headers`.
fn allows(rule: &CorsRule, origin: &str, method: &str, headers: &[String]) -> bool {
    rule.allowed_origins.iter().any(|o| wildcard(o, origin, false))
        && rule.allowed_methods.iter().any(|m| m == method)
        && headers.iter().all(|h| rule.allowed_headers.iter().any(|a| wildcard(a, h, true)))
}

/// The first rule allowing `origin` to use `method` with `headers` (lowercase names).
pub fn find<'a>(cfg: &'a CorsConfig, origin: &str, method: &str, headers: &[String]) -> Option<&'a CorsRule> {
    cfg.rules.iter().find(|r| allows(r, origin, method, headers))
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The headers of a response to a request `rule` allows.
pub fn response_headers(rule: &CorsRule, origin: &str, h: &mut HeaderMap) {
    let any = rule.allowed_origins.iter().any(|o| o == "*");
    set(h, "access-control-allow-origin", if any { "*" } else { origin });
    set(h, "access-control-allow-methods", &rule.allowed_methods.join(", "));
    if !rule.expose_headers.is_empty() {
        set(h, "access-control-expose-headers", &rule.expose_headers.join(", "));
    }
    if !any {
        h.append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The headers of a preflight answer.
fn preflight_headers(rule: &CorsRule, origin: &str, requested: &[String], h: &mut HeaderMap) {
    response_headers(rule, origin, h);
    if !requested.is_empty() {
        set(h, "access-control-allow-headers", &requested.join(", "));
    }
    if let Some(age) = rule.max_age_seconds {
        set(h, "access-control-max-age", &age.to_string());
    }
    h.append(http::header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
    h.append(http::header::VARY, HeaderValue::from_static("Access-Control-Request-Method"));
}

/// The S3 error of a preflight, with its status.
pub struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
}

/// Answers a preflight for `bucket` from its rules: the headers to send with 200, or why not.
pub fn preflight(cfg: Option<&CorsConfig>, headers: &HeaderMap) -> Result<HeaderMap, Refused> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(method)) = (get("origin"), get("access-control-request-method")) else {
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            code: "BadRequest",
            message: "Insufficient information. Origin request header needed.",
        });
    };
    let requested: Vec<String> = headers
        .get_all("access-control-request-headers")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let Some(cfg) = cfg.filter(|c| !c.rules.is_empty()) else {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            code: "AccessForbidden",
            message: "CORSResponse: CORS is not enabled for this bucket.",
        });
    };
    match find(cfg, origin, method, &requested) {
        Some(rule) => {
            let mut h = HeaderMap::new();
            preflight_headers(rule, origin, &requested, &mut h);
            Ok(h)
        }
        None => Err(Refused {
            status: StatusCode::FORBIDDEN,
            code: "AccessForbidden",
            message: "CORSResponse: This CORS request is not allowed. This is usually because the evaluation of \
                      Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers \
                      are not whitelisted by the resource's CORS spec.",
        }),
    }
}

/// Adds the CORS headers to the response of an actual request from `origin` when a rule
/// of `cfg` allows it.
pub fn decorate(cfg: Option<&CorsConfig>, origin: &str, method: &str, resp: &mut HeaderMap) {
    if let Some(rule) = cfg.and_then(|c| find(c, origin, method, &[])) {
        response_headers(rule, origin, resp);
    }
}

/// The CORS rules of the bucket named `bucket`, if it has any, for the HTTP layers (no
/// rights are checked: CORS answers say nothing about the bucket's content).
pub async fn rules(lookups: &Lookups, bucket: &str) -> Option<CorsConfig> {
    // Preflights are unsigned: a name that cannot be a bucket's costs no read.
    hangar_model::catalog::validate_bucket_name(bucket).ok()?;
    match lookups.bucket(bucket).await {
        Ok((b, _)) => b.and_then(|b| b.cors),
        Err(e) => {
            tracing::debug!(error = %e, "CORS rules could not be read");
            None
        }
    }
}

/// Checks and converts the rules of a PutBucketCors body.
pub fn from_dto(rules: &[CORSRule]) -> S3Result<CorsConfig> {
    let invalid = |m: String| custom_error("InvalidRequest", 400, m);
    if rules.is_empty() {
        return Err(s3_error_malformed("a CORS configuration needs at least one CORSRule"));
    }
    if rules.len() > MAX_RULES {
        return Err(invalid(format!("a CORS configuration holds at most {MAX_RULES} rules")));
    }
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
            return Err(s3_error_malformed("every CORSRule needs an AllowedOrigin and an AllowedMethod"));
        }
        if let Some(m) = r.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(invalid(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {}",
                crate::http_layer::bounded(m)
            )));
        }
        let headers = r.allowed_headers.clone().unwrap_or_default();
        for (what, list) in [("AllowedOrigin", &r.allowed_origins), ("AllowedHeader", &headers)] {
            if let Some(v) = list.iter().find(|v| v.matches('*').count() > 1) {
                return Err(invalid(format!(
                    "{what} \"{}\" can not have more than one wildcard.",
                    crate::http_layer::bounded(v)
                )));
            }
        }
        out.push(CorsRule {
            id: r.id.clone().unwrap_or_default(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: headers,
            expose_headers: r.expose_headers.clone().unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        });
    }
    Ok(CorsConfig { rules: out })
}

fn s3_error_malformed(m: &str) -> s3s::S3Error {
    s3s::S3Error::with_message(s3s::S3ErrorCode::MalformedXML, m.to_string())
}

/// The rules as GetBucketCors answers them.
pub fn to_dto(cfg: &CorsConfig) -> Vec<CORSRule> {
    cfg.rules
        .iter()
        .map(|r| CORSRule {
            id: (!r.id.is_empty()).then(|| r.id.clone()),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
            expose_headers: (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            max_age_seconds: Some(600),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let cfg = CorsConfig {
            rules: vec![rule(&["https://*.example.com"], &["GET"], &["x-amz-*"]), rule(&["*"], &["HEAD"], &[])],
        };
        let headers = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(find(&cfg, "https://app.example.com", "GET", &headers(&["x-amz-date"])).is_some());
        assert!(find(&cfg, "https://app.example.com", "GET", &headers(&["authorization"])).is_none());
        assert!(find(&cfg, "https://example.org", "GET", &[]).is_none());
        assert!(find(&cfg, "https://app.example.com", "PUT", &[]).is_none());
        assert!(std::ptr::eq(find(&cfg, "https://example.org", "HEAD", &[]).unwrap(), &cfg.rules[1]));
        // Origins compare exactly (scheme and port included); header names without case.
        assert!(find(&cfg, "http://app.example.com", "GET", &[]).is_none());
        assert!(wildcard("X-Amz-*", "x-amz-meta-a", true));
        assert!(!wildcard("https://*.example.com", "https://.example.co", false));
    }

    #[test]
    fn preflights_answer_or_refuse_as_s3() {
        let cfg = CorsConfig { rules: vec![rule(&["https://a.test"], &["PUT"], &["*"])] };
        let mut req = HeaderMap::new();
        req.insert("origin", HeaderValue::from_static("https://a.test"));
        req.insert("access-control-request-method", HeaderValue::from_static("PUT"));
        req.insert("access-control-request-headers", HeaderValue::from_static("Content-Type, X-Amz-Date"));
        let h = preflight(Some(&cfg), &req).ok().expect("allowed");
        assert_eq!(h["access-control-allow-origin"], "https://a.test");
        assert_eq!(h["access-control-allow-methods"], "PUT");
        assert_eq!(h["access-control-allow-headers"], "content-type, x-amz-date");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(preflight(None, &req).err().map(|r| r.status), Some(StatusCode::FORBIDDEN));
        req.insert("origin", HeaderValue::from_static("https://b.test"));
        assert_eq!(preflight(Some(&cfg), &req).err().map(|r| r.code), Some("AccessForbidden"));
        req.remove("origin");
        assert_eq!(preflight(Some(&cfg), &req).err().map(|r| r.status), Some(StatusCode::BAD_REQUEST));
    }
}

//! Conditional requests (RFC 9110 section 13 as S3 applies it): If-Match,
//! If-None-Match, If-Modified-Since, If-Unmodified-Since, and their copy-source forms.

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Error, S3ErrorCode, s3_error};

#[derive(Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        other => other.as_etag().is_some_and(|e| e.value() == etag),
    }
}

/// Compares at one-second precision, as HTTP dates carry.
fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// Sets ETag and Last-Modified of a representation.
pub fn validators(etag: &str, last_modified_ms: u64, headers: &mut http::HeaderMap) {
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
        headers.insert(http::header::ETAG, v);
    }
    let lm = time::OffsetDateTime::from_unix_timestamp((last_modified_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut date = Vec::new();
    if Timestamp::from(lm).format(s3s::dto::TimestampFormat::HttpDate, &mut date).is_ok()
        && let Ok(v) = http::HeaderValue::from_bytes(&date)
    {
        headers.insert(http::header::LAST_MODIFIED, v);
    }
}

pub enum Outcome {
    Proceed,
    /// 304 for GET/HEAD.
    NotModified,
    /// 412.
    Failed,
}

impl Conditions<'_> {
    pub fn evaluate(&self, etag: &str, last_modified_ms: u64) -> Outcome {
        let lm = (last_modified_ms / 1000) as i64;
        if let Some(c) = self.if_match {
            if !etag_matches(c, etag) {
                return Outcome::Failed;
            }
        } else if let Some(t) = self.if_unmodified_since
            && lm > secs(t)
        {
            return Outcome::Failed;
        }
        if let Some(c) = self.if_none_match {
            if etag_matches(c, etag) {
                return Outcome::NotModified;
            }
        } else if let Some(t) = self.if_modified_since
            && lm <= secs(t)
        {
            return Outcome::NotModified;
        }
        Outcome::Proceed
    }

    /// For GET and HEAD: 304 or 412 as errors.
    pub fn check_read(&self, etag: &str, last_modified_ms: u64) -> Result<(), S3Error> {
        match self.evaluate(etag, last_modified_ms) {
            Outcome::Proceed => Ok(()),
            Outcome::NotModified => {
                let mut e = S3Error::new(S3ErrorCode::NotModified);
                e.set_status_code(http::StatusCode::NOT_MODIFIED);
                // A 304 carries the validators a cache needs to refresh its copy (RFC 9110
                // section 15.4.5), as AWS sends them.
                let mut headers = http::HeaderMap::new();
                validators(etag, last_modified_ms, &mut headers);
                e.set_headers(headers);
                Err(e)
            }
            Outcome::Failed => Err(s3_error!(PreconditionFailed, "precondition failed")),
        }
    }

    /// For copy sources and writes: any unmet condition is 412.
    pub fn check_strict(&self, etag: &str, last_modified_ms: u64) -> Result<(), S3Error> {
        match self.evaluate(etag, last_modified_ms) {
            Outcome::Proceed => Ok(()),
            _ => Err(s3_error!(PreconditionFailed, "precondition failed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(secs).unwrap())
    }

    #[test]
    fn precedence_follows_rfc() {
        let m = ETagCondition::ETag(ETag::Strong("abc".into()));
        let other = ETagCondition::ETag(ETag::Strong("zzz".into()));
        let lm = 1_000_000;
        let ok = |c: Conditions| matches!(c.evaluate("abc", lm * 1000), Outcome::Proceed);
        assert!(ok(Conditions { if_match: Some(&m), ..Default::default() }));
        assert!(!ok(Conditions { if_match: Some(&other), ..Default::default() }));
        // If-Match true overrides a failing If-Unmodified-Since.
        let early = ts(lm as i64 - 10);
        assert!(ok(Conditions { if_match: Some(&m), if_unmodified_since: Some(&early), ..Default::default() }));
        assert!(!ok(Conditions { if_unmodified_since: Some(&early), ..Default::default() }));
        // If-None-Match false overrides If-Modified-Since.
        let late = ts(lm as i64 + 10);
        assert!(ok(Conditions { if_none_match: Some(&other), if_modified_since: Some(&late), ..Default::default() }));
        assert!(matches!(
            Conditions { if_modified_since: Some(&late), ..Default::default() }.evaluate("abc", lm * 1000),
            Outcome::NotModified
        ));
        assert!(matches!(
            Conditions { if_none_match: Some(&ETagCondition::Any), ..Default::default() }.evaluate("abc", 0),
            Outcome::NotModified
        ));
    }
}

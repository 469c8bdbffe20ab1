//! Virtual-hosted-style addressing: `bucket.<root_domain>` names the bucket; any other
//! host (an IP, the root domain itself, another name) means path style, as in Garage.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

pub struct RootDomain {
    /// Lowercase, without a leading dot (Garage writes one).
    domain: String,
}

impl RootDomain {
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.trim_start_matches('.').to_ascii_lowercase() }
    }

    /// The bucket a Host header names, if it is a subdomain of the root domain.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = without_port(host);
        let prefix = name.len().checked_sub(self.domain.len() + 1)?;
        let (bucket, rest) = name.split_at(prefix);
        (rest.len() == self.domain.len() + 1
            && rest.starts_with('.')
            && rest[1..].eq_ignore_ascii_case(&self.domain)
            && !bucket.is_empty())
        .then_some(bucket)
    }
}

/// A Host header's name without its port (clients send the port whenever it is not the
/// scheme's default).
pub fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    }
}

impl S3Host for RootDomain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RootDomain;

    #[test]
    fn buckets_come_from_subdomains_only() {
        let d = RootDomain::new(".s3.example.com");
        assert_eq!(d.bucket_of("photos.s3.example.com"), Some("photos"));
        assert_eq!(d.bucket_of("photos.s3.example.com:3900"), Some("photos"));
        assert_eq!(d.bucket_of("a.b.s3.example.com"), Some("a.b"));
        assert_eq!(d.bucket_of("s3.example.com:3900"), None);
        assert_eq!(d.bucket_of("127.0.0.1:3900"), None);
        assert_eq!(d.bucket_of("photos.s3.example.org"), None);
        assert_eq!(d.bucket_of("xs3.example.com"), None);
    }
}

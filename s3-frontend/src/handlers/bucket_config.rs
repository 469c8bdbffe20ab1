//! Bucket configurations kept by Hangar: CORS rules and the website configuration. Setting
//! or removing one needs the owner right; reading one, any right.

use hangar_proto::model::{Redirect as StoredRedirect, RoutingRule as StoredRule, WebsiteConfig};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Hangar;
use super::common::authorized;
use crate::errors::{OrS3, custom_error};
use crate::http_layer::bounded;

/// Most routing rules a website configuration may hold, as in AWS.
const MAX_ROUTING_RULES: usize = 50;

pub async fn put_bucket_cors(
    h: &Hangar,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let (_, bucket) = authorized(&req)?;
    let cfg = crate::cors::from_dto(&req.input.cors_configuration.cors_rules)?;
    h.store.set_bucket_cors(&bucket, Some(cfg)).await.or_s3()?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub async fn get_bucket_cors(req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let (_, bucket) = authorized(&req)?;
    match bucket.cors.as_ref().filter(|c| !c.rules.is_empty()) {
        Some(c) => Ok(S3Response::new(GetBucketCorsOutput { cors_rules: Some(crate::cors::to_dto(c)) })),
        None => Err(custom_error("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist")),
    }
}

pub async fn delete_bucket_cors(
    h: &Hangar,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    let (_, bucket) = authorized(&req)?;
    h.store.set_bucket_cors(&bucket, None).await.or_s3()?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}

fn invalid(m: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, m)
}

fn protocol(p: Option<&Protocol>) -> S3Result<String> {
    match p.map(|p| p.as_str()) {
        None => Ok(String::new()),
        Some(p @ ("http" | "https")) => Ok(p.to_string()),
        Some(other) => Err(invalid(format!("Invalid protocol, protocol can be http or https: {}", bounded(other)))),
    }
}

fn redirect(r: &Redirect) -> S3Result<StoredRedirect> {
    if r.replace_key_prefix_with.is_some() && r.replace_key_with.is_some() {
        return Err(invalid("You can only define ReplaceKeyPrefix or ReplaceKey but not both.".into()));
    }
    let code = match r.http_redirect_code.as_deref() {
        None => 0,
        Some(c) => match c.parse::<u32>() {
            Ok(n @ 300..=399) => n,
            _ => return Err(invalid(format!("The provided HTTP redirect code ({}) is not valid.", bounded(c)))),
        },
    };
    Ok(StoredRedirect {
        host_name: r.host_name.clone().unwrap_or_default(),
        protocol: protocol(r.protocol.as_ref())?,
        replace_key_prefix_with: r.replace_key_prefix_with.clone(),
        replace_key_with: r.replace_key_with.clone(),
        http_redirect_code: code,
    })
}

/// Checks and converts a PutBucketWebsite body, with AWS's rules.
pub fn website_from_dto(w: &WebsiteConfiguration) -> S3Result<WebsiteConfig> {
    if let Some(all) = &w.redirect_all_requests_to {
        if w.index_document.is_some() || w.error_document.is_some() || w.routing_rules.is_some() {
            return Err(invalid(
                "RedirectAllRequestsTo cannot be provided in conjunction with other Routing Rules.".into(),
            ));
        }
        if all.host_name.is_empty() {
            return Err(invalid("RedirectAllRequestsTo needs a HostName".into()));
        }
        return Ok(WebsiteConfig {
            redirect_all: Some(StoredRedirect {
                host_name: all.host_name.clone(),
                protocol: protocol(all.protocol.as_ref())?,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let Some(index) = &w.index_document else {
        return Err(invalid(
            "A value for IndexDocument Suffix must be provided if RedirectAllRequestsTo is empty".into(),
        ));
    };
    if index.suffix.is_empty() || index.suffix.contains('/') {
        return Err(invalid("The IndexDocument Suffix is not well formed".into()));
    }
    let rules = w.routing_rules.as_deref().unwrap_or_default();
    if rules.len() > MAX_ROUTING_RULES {
        return Err(invalid(format!("a website configuration holds at most {MAX_ROUTING_RULES} routing rules")));
    }
    let mut routing_rules = Vec::with_capacity(rules.len());
    for r in rules {
        let c = r.condition.as_ref();
        let code = match c.and_then(|c| c.http_error_code_returned_equals.as_deref()) {
            None => 0,
            Some(s) => match s.parse::<u32>() {
                Ok(n @ 400..=599) => n,
                _ => {
                    return Err(invalid(format!(
                        "The provided HTTP error code ({}) is not valid. Valid codes are 4XX or 5XX.",
                        bounded(s)
                    )));
                }
            },
        };
        routing_rules.push(StoredRule {
            key_prefix_equals: c.and_then(|c| c.key_prefix_equals.clone()),
            http_error_code_returned_equals: code,
            redirect: Some(redirect(&r.redirect)?),
        });
    }
    Ok(WebsiteConfig {
        index_document: index.suffix.clone(),
        error_document: w.error_document.as_ref().map(|e| e.key.clone()).unwrap_or_default(),
        redirect_all: None,
        routing_rules,
    })
}

fn protocol_dto(p: &str) -> Option<Protocol> {
    (!p.is_empty()).then(|| Protocol::from(p.to_string()))
}

fn website_to_dto(w: &WebsiteConfig) -> GetBucketWebsiteOutput {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let rules: Vec<RoutingRule> = w
        .routing_rules
        .iter()
        .map(|r| {
            let d = r.redirect.clone().unwrap_or_default();
            let condition =
                (r.key_prefix_equals.is_some() || r.http_error_code_returned_equals != 0).then(|| Condition {
                    key_prefix_equals: r.key_prefix_equals.clone(),
                    http_error_code_returned_equals: (r.http_error_code_returned_equals != 0)
                        .then(|| r.http_error_code_returned_equals.to_string()),
                });
            RoutingRule {
                condition,
                redirect: Redirect {
                    host_name: some(&d.host_name),
                    http_redirect_code: (d.http_redirect_code != 0).then(|| d.http_redirect_code.to_string()),
                    protocol: protocol_dto(&d.protocol),
                    replace_key_prefix_with: d.replace_key_prefix_with,
                    replace_key_with: d.replace_key_with,
                },
            }
        })
        .collect();
    GetBucketWebsiteOutput {
        error_document: some(&w.error_document).map(|key| ErrorDocument { key }),
        index_document: some(&w.index_document).map(|suffix| IndexDocument { suffix }),
        redirect_all_requests_to: w
            .redirect_all
            .as_ref()
            .map(|r| RedirectAllRequestsTo { host_name: r.host_name.clone(), protocol: protocol_dto(&r.protocol) }),
        routing_rules: (!rules.is_empty()).then_some(rules),
    }
}

pub async fn put_bucket_website(
    h: &Hangar,
    req: S3Request<PutBucketWebsiteInput>,
) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
    let (_, bucket) = authorized(&req)?;
    let cfg = website_from_dto(&req.input.website_configuration)?;
    h.store.set_bucket_website(&bucket, Some(cfg)).await.or_s3()?;
    Ok(S3Response::new(PutBucketWebsiteOutput::default()))
}

pub async fn get_bucket_website(
    h: &Hangar,
    req: S3Request<GetBucketWebsiteInput>,
) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
    let (_, bucket) = authorized(&req)?;
    match &bucket.website {
        // A configuration made with `hangar bucket website` may leave the index to the
        // frontends' default: answered as it is served, so it can be sent back as it is.
        Some(w) if w.index_document.is_empty() && w.redirect_all.is_none() => {
            let w = WebsiteConfig { index_document: h.cfg.web_index.clone(), ..w.clone() };
            Ok(S3Response::new(website_to_dto(&w)))
        }
        Some(w) => Ok(S3Response::new(website_to_dto(w))),
        None => Err(custom_error(
            "NoSuchWebsiteConfiguration",
            404,
            "The specified bucket does not have a website configuration",
        )),
    }
}

pub async fn delete_bucket_website(
    h: &Hangar,
    req: S3Request<DeleteBucketWebsiteInput>,
) -> S3Result<S3Response<DeleteBucketWebsiteOutput>> {
    let (_, bucket) = authorized(&req)?;
    h.store.set_bucket_website(&bucket, None).await.or_s3()?;
    Ok(S3Response::new(DeleteBucketWebsiteOutput::default()))
}

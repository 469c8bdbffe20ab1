//! The static website endpoint and CORS: a site with an index, an error page and routing
//! rules served to plain HTTP clients on `hangar server --web-addr`, the `hangar bucket
//! website` command, PutBucketWebsite / PutBucketCors through the `aws-sdk-s3` crate, and
//! CORS preflights and headers on both endpoints. (A real browser loads a site in the
//! `website` stage of `.ci/run`.)

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CorsConfiguration, CorsRule, ErrorDocument, IndexDocument, Protocol, Redirect, RoutingRule, WebsiteConfiguration,
};
use hangar_integration_tests::sigv4::{UNSIGNED_PAYLOAD, encode_path};
use hangar_integration_tests::*;

async fn put_page(s3: &Client, bucket: &str, key: &str, body: &str, content_type: &str) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// A plain HTTP client that follows no redirect and sends `host` as the Host header.
fn web_client(server: &Server, host: &str) -> reqwest::Client {
    let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host_only, server.web_addr)
        .no_proxy()
        .build()
        .expect("client")
}

struct Site<'a> {
    server: &'a Server,
    host: String,
}

impl Site<'_> {
    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.server.web_addr.port())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        web_client(self.server, &self.host).get(self.url(path)).send().await.expect("GET")
    }

    async fn request(&self, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = web_client(self.server, &self.host).request(method, self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request")
    }
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers().get("location").map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn a_static_site_is_served_with_its_index_error_page_and_redirects() {
    let (server, s3, bucket) =
        Server::builder().env("HANGAR_S3_WEB_ROOT_DOMAIN", ".web.test").start_with_bucket("site").await;
    put_page(&s3, &bucket, "index.html", "<h1>home</h1>", "text/html").await;
    put_page(&s3, &bucket, "about/index.html", "<h1>about</h1>", "text/html").await;
    put_page(&s3, &bucket, "style.css", "body { color: red }", "text/css").await;
    put_page(&s3, &bucket, "404.html", "<h1>not here</h1>", "text/html").await;
    let site = Site { server: &server, host: bucket.clone() };

    // Not a website yet: nothing is served, and the S3 port still wants a signature.
    assert_eq!(site.get("/").await.status().as_u16(), 404);
    let anonymous = reqwest::get(format!("{}/{bucket}/index.html", server.endpoint)).await.expect("anonymous GET");
    assert_eq!(anonymous.status().as_u16(), 403);

    let out = server.cli_ok(["bucket", "website", "--allow", "--error-document", "404.html", &bucket]).await;
    assert!(out.contains("Website: served (index document the default, error document 404.html)"), "{out}");
    let info = server.cli_ok(["bucket", "info", &bucket]).await;
    assert!(info.contains("Website: served"), "{info}");

    let home = site.get("/").await;
    assert_eq!(home.status().as_u16(), 200);
    assert_eq!(home.headers()["content-type"], "text/html");
    assert_eq!(home.text().await.expect("body"), "<h1>home</h1>");
    assert_eq!(site.get("/about/").await.text().await.expect("body"), "<h1>about</h1>");
    let dir = site.get("/about").await;
    assert_eq!((dir.status().as_u16(), location(&dir).as_deref()), (302, Some("/about/")));
    let missing = site.get("/nope.html").await;
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(missing.text().await.expect("body"), "<h1>not here</h1>");

    // HEAD, Range and conditional GETs.
    let head = site.request(reqwest::Method::HEAD, "/style.css", &[]).await;
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-length"], "19");
    assert_eq!(head.headers()["content-type"], "text/css");
    let etag = head.headers()["etag"].to_str().expect("etag").to_string();
    let part = site.request(reqwest::Method::GET, "/style.css", &[("range", "bytes=0-3")]).await;
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 0-3/19");
    assert_eq!(part.text().await.expect("body"), "body");
    let cached = site.request(reqwest::Method::GET, "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status().as_u16(), 304);
    assert_eq!(cached.headers()["etag"].to_str().expect("etag"), etag);
    let post = site.request(reqwest::Method::POST, "/index.html", &[]).await;
    assert_eq!(post.status().as_u16(), 405);
    let put = site.request(reqwest::Method::PUT, "/index.html", &[]).await;
    assert_eq!(put.status().as_u16(), 405);

    // Under the root domain, the subdomain names the bucket.
    let sub = Site { server: &server, host: format!("{bucket}.web.test") };
    assert_eq!(sub.get("/").await.text().await.expect("body"), "<h1>home</h1>");

    // Routing rules through the S3 API: a moved prefix, and missing docs sent elsewhere.
    let rules = vec![
        RoutingRule::builder()
            .condition(aws_sdk_s3::types::Condition::builder().key_prefix_equals("old/").build())
            .redirect(Redirect::builder().replace_key_prefix_with("new/").build())
            .build(),
        RoutingRule::builder()
            .condition(
                aws_sdk_s3::types::Condition::builder()
                    .key_prefix_equals("docs/")
                    .http_error_code_returned_equals("404")
                    .build(),
            )
            .redirect(
                Redirect::builder()
                    .host_name("docs.example.com")
                    .protocol(Protocol::Https)
                    .http_redirect_code("302")
                    .build(),
            )
            .build(),
    ];
    let cfg = WebsiteConfiguration::builder()
        .index_document(IndexDocument::builder().suffix("index.html").build().expect("index"))
        .error_document(ErrorDocument::builder().key("404.html").build().expect("error"))
        .set_routing_rules(Some(rules))
        .build();
    s3.put_bucket_website().bucket(&bucket).website_configuration(cfg).send().await.expect("put website");
    let got = s3.get_bucket_website().bucket(&bucket).send().await.expect("get website");
    assert_eq!(got.index_document().map(|i| i.suffix()), Some("index.html"));
    assert_eq!(got.routing_rules().len(), 2);
    let moved = site.get("/old/page.html").await;
    let want = format!("http://{bucket}:{}/new/page.html", server.web_addr.port());
    assert_eq!((moved.status().as_u16(), location(&moved)), (301, Some(want)));
    let docs = site.get("/docs/guide.html").await;
    assert_eq!(
        (docs.status().as_u16(), location(&docs).as_deref()),
        (302, Some("https://docs.example.com/docs/guide.html"))
    );
    put_page(&s3, &bucket, "docs/guide.html", "guide", "text/html").await;
    assert_eq!(site.get("/docs/guide.html").await.status().as_u16(), 200, "the rule applies to errors only");

    // Invalid configurations are refused.
    let both = Redirect::builder().replace_key_prefix_with("a").replace_key_with("b").build();
    let bad = WebsiteConfiguration::builder()
        .index_document(IndexDocument::builder().suffix("index.html").build().expect("index"))
        .routing_rules(RoutingRule::builder().redirect(both).build())
        .build();
    let r = s3.put_bucket_website().bucket(&bucket).website_configuration(bad).send().await;
    expect_s3_error(r, 400, Some("InvalidArgument"));
    let slash = WebsiteConfiguration::builder()
        .index_document(IndexDocument::builder().suffix("a/index.html").build().expect("index"))
        .build();
    let r = s3.put_bucket_website().bucket(&bucket).website_configuration(slash).send().await;
    expect_s3_error(r, 400, Some("InvalidArgument"));

    // Removed through either door, the site is gone.
    s3.delete_bucket_website().bucket(&bucket).send().await.expect("delete website");
    expect_s3_error(s3.get_bucket_website().bucket(&bucket).send().await, 404, Some("NoSuchWebsiteConfiguration"));
    assert_eq!(site.get("/").await.status().as_u16(), 404);
    let bad = server.cli(["bucket", "website", "--allow", "--index-document", "about/index.html", &bucket]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("without `/`"), "{bad:?}");
    server.cli_ok(["bucket", "website", "--allow", &bucket]).await;
    assert_eq!(site.get("/").await.status().as_u16(), 200);
    server.cli_ok(["bucket", "website", "--deny", &bucket]).await;
    catalog_settles().await;
    assert_eq!(site.get("/").await.status().as_u16(), 404);
}

#[tokio::test]
async fn cors_rules_answer_preflights_and_decorate_responses_on_both_endpoints() {
    let (server, s3, bucket) = Server::start_with_bucket("cors").await;
    put_page(&s3, &bucket, "index.html", "hello", "text/html").await;
    let path = encode_path(&bucket, "index.html");
    let preflight = |origin: &'static str, method: &'static str| {
        let url = format!("{}{path}", server.endpoint);
        async move {
            reqwest::Client::new()
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", "content-type, x-amz-date")
                .send()
                .await
                .expect("preflight")
        }
    };
    let r = preflight("https://app.example.com", "PUT").await;
    assert_eq!(r.status().as_u16(), 403, "no rules: refused");
    expect_s3_error(s3.get_bucket_cors().bucket(&bucket).send().await, 404, Some("NoSuchCORSConfiguration"));

    let cfg = CorsConfiguration::builder()
        .cors_rules(
            CorsRule::builder()
                .allowed_origins("https://*.example.com")
                .allowed_methods("GET")
                .allowed_methods("PUT")
                .allowed_headers("*")
                .expose_headers("ETag")
                .max_age_seconds(300)
                .build()
                .expect("rule"),
        )
        .cors_rules(
            CorsRule::builder().allowed_origins("*").allowed_methods("GET").allowed_headers("*").build().expect("rule"),
        )
        .build()
        .expect("cors");
    s3.put_bucket_cors().bucket(&bucket).cors_configuration(cfg).send().await.expect("put cors");
    let got = s3.get_bucket_cors().bucket(&bucket).send().await.expect("get cors");
    assert_eq!(got.cors_rules().len(), 2);
    assert_eq!(got.cors_rules()[0].max_age_seconds(), Some(300));

    let ok = preflight("https://app.example.com", "PUT").await;
    assert_eq!(ok.status().as_u16(), 200);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-amz-date");
    assert_eq!(h["access-control-max-age"], "300");
    let any = preflight("https://elsewhere.test", "GET").await;
    assert_eq!(any.headers()["access-control-allow-origin"], "*");
    let refused = preflight("https://elsewhere.test", "PUT").await;
    assert_eq!(refused.status().as_u16(), 403);
    assert!(refused.text().await.expect("body").contains("<Code>AccessForbidden</Code>"));

    // A signed request from an allowed origin gets the headers on its answer.
    let mut req = server.raw_request("GET", &path);
    req.headers.push(("origin".into(), "https://app.example.com".into()));
    let resp = server.send_signed(req, UNSIGNED_PAYLOAD).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers()["access-control-expose-headers"], "ETag");

    // The website endpoint answers the same rules.
    server.cli_ok(["bucket", "website", "--allow", &bucket]).await;
    let site = Site { server: &server, host: bucket.clone() };
    let r = site
        .request(
            reqwest::Method::OPTIONS,
            "/index.html",
            &[("origin", "https://app.example.com"), ("access-control-request-method", "GET")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let r = site.request(reqwest::Method::GET, "/index.html", &[("origin", "https://other.test")]).await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.text().await.expect("body"), "hello");

    // Invalid rules are refused; deleting them ends CORS.
    let bad = CorsConfiguration::builder()
        .cors_rules(CorsRule::builder().allowed_origins("*").allowed_methods("PATCH").build().expect("rule"))
        .build()
        .expect("cors");
    let r = s3.put_bucket_cors().bucket(&bucket).cors_configuration(bad).send().await;
    expect_s3_error(r, 400, Some("InvalidRequest"));
    let two_stars = CorsConfiguration::builder()
        .cors_rules(
            CorsRule::builder().allowed_origins("https://*.*.test").allowed_methods("GET").build().expect("rule"),
        )
        .build()
        .expect("cors");
    let r = s3.put_bucket_cors().bucket(&bucket).cors_configuration(two_stars).send().await;
    expect_s3_error(r, 400, Some("InvalidRequest"));
    s3.delete_bucket_cors().bucket(&bucket).send().await.expect("delete cors");
    assert_eq!(preflight("https://app.example.com", "GET").await.status().as_u16(), 403);
}

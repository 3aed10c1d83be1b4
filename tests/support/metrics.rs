//! Scraping a `charm-host` metrics endpoint with a real HTTP client (hyper), and reading
//! series out of the text.

#![allow(dead_code)]

use http_body_util::BodyExt as _;

/// GETs `url` (`http://HOST:PORT/metrics`) and returns the body of a 200 answer in the
/// OpenMetrics text format; an error says what went wrong.
pub async fn scrape(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{url}: {}", response.status()));
    }
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if !content_type.starts_with("application/openmetrics-text") {
        return Err(format!("{url}: content type {content_type}"));
    }
    let body = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| format!("{url}: {e}"))
}

/// [`scrape`] from a plain `#[test]`.
pub fn scrape_blocking(url: &str) -> Result<String, String> {
    super::block_on(scrape(url))
}

/// The value of each series of metric `name` in a scrape, by its `unit` label.
pub fn series_by_unit(scrape: &str, name: &str) -> Vec<(String, f64)> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let unit = labels.split(',').find_map(|l| l.strip_prefix("unit=\""))?.trim_end_matches('"');
            Some((unit.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

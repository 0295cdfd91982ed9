//! Whether the gateway lets this plugin call `url`, asked at configure (`http-client.allows`,
//! which sends nothing) so that a URL outside the plugin's `http_client.allow` grant rejects the
//! config at load rather than every request.

use airlock_sdk::http_client::{self, HttpError};

/// Checks at configure that the grant allows `url` (already checked by `config::check_url`).
pub fn check(url: &str) -> Result<(), String> {
    judge(url, http_client::allows(url))
}

/// What the gateway's answer says about the grant.
fn judge(url: &str, outcome: Result<(), HttpError>) -> Result<(), String> {
    match outcome {
        Ok(()) => Ok(()),
        Err(HttpError::Denied(reason)) => Err(format!(
            "`url`: the gateway refuses calls to `{url}`: {reason}. The plugin needs a `[plugins.<name>]` \
             definition with `capabilities = [\"http-client\"]` and the URL's origin in its `http_client.allow`"
        )),
        Err(HttpError::Invalid(reason)) => Err(format!("`url`: {reason}")),
        // Not answers `allows` gives; were they, the request phase still fails as configured.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_origin_or_a_bad_url_is_an_error() {
        let err = judge("http://a:1/x", Err(HttpError::Denied("http://a:1 is not in this plugin's `http_client.allow`".into()))).unwrap_err();
        assert!(err.starts_with("`url`: the gateway refuses calls to `http://a:1/x`: http://a:1 is not in"), "{err}");
        assert_eq!(judge("http://a", Ok(())), Ok(()));
        assert_eq!(judge("http://a", Err(HttpError::Invalid("`x` is not a URL".into()))), Err("`url`: `x` is not a URL".into()));
    }
}

//! JSON responses serialized in one pass into one buffer; salvo's own `Json`
//! writes in many small pieces, which showed as the top cost of list endpoints.

use salvo::http::HeaderValue;
use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::{Response, Scribe, StatusCode};
use serde::Serialize;

pub struct Json<T>(pub T);

impl<T: Serialize> Scribe for Json<T> {
    fn render(self, res: &mut Response) {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => {
                if !res.headers().contains_key(CONTENT_TYPE) {
                    res.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                res.body(bytes);
            }
            Err(e) => {
                tracing::error!(error = %e, "response did not serialize");
                res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    }
}

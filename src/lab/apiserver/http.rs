//! HTTP front of the embedded API server: connection handling, URL routing,
//! request counting and fault injection, and JSON responses.
//!
//! Owns the mapping from method + path to store operations. It must never
//! hold the store lock across an await.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::ApiServer;
use super::discovery;
use super::error::ApiError;
use super::openapi;
use super::patch::{self, PatchKind};
use super::printing;
use super::resources::ResourceType;
use super::selectors::{ListParams, query_param};
use super::store::FieldValidation;
use super::watch::{self, WatchContext};

/// Response body type for every answer.
pub type Body = BoxBody<Bytes, Infallible>;

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct Dropped;

/// Where a request path points.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    OpenApiV2,
    OpenApiV3Root,
    /// `/openapi/v3/<api/v1 | apis/g/v>`: group and version.
    OpenApiV3(String, String),
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Object(ObjectPath),
    Unknown,
}

/// A resource path: `/api/v1/...` or `/apis/<g>/<v>/...`.
#[derive(Debug, PartialEq, Eq)]
struct ObjectPath {
    group: String,
    version: String,
    /// From `/namespaces/<ns>/...`.
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str, is_namespaced: impl Fn(&str, &str, &str) -> bool) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["openapi", "v3"] => return Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => return Route::OpenApiV3(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => return Route::OpenApiV3(g.to_string(), v.to_string()),
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v] => return Route::Resources(String::new(), v.to_string()),
        ["apis", g, v] => return Route::Resources(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let obj = match rest {
        ["namespaces", ns, plural, tail @ ..] if is_namespaced(group, version, plural) => {
            ObjectPath {
                group: group.into(),
                version: version.into(),
                namespace: Some(ns.to_string()),
                plural: plural.to_string(),
                name: owned(tail.first()),
                subresource: owned(tail.get(1)),
            }
        }
        [plural, tail @ ..] if tail.len() <= 2 => ObjectPath {
            group: group.into(),
            version: version.into(),
            namespace: None,
            plural: plural.to_string(),
            name: owned(tail.first()),
            subresource: owned(tail.get(1)),
        },
        _ => return Route::Unknown,
    };
    Route::Object(obj)
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(BoxBody::new(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// The verb and resource a request is counted under.
fn count_key(method: &Method, route: &Route, watch: bool) -> (String, String) {
    let Route::Object(p) = route else {
        return ("get".into(), "discovery".into());
    };
    let verb = match (method, p.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "other",
    };
    let resource = match &p.subresource {
        Some(s) => format!("{}/{s}", p.plural),
        None => p.plural.clone(),
    };
    (verb.into(), resource)
}

/// Answers one request.
pub async fn handle(
    server: ApiServer,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let accept = header(hyper::header::ACCEPT);
    let route = {
        let store = server.lock();
        route(&path, |g, v, p| {
            store.registry.lookup(g, v, p).is_some_and(|t| t.namespaced)
        })
    };
    let watch_flag = query_param(&query, "watch").is_some_and(|v| v == "true" || v == "1");
    let key = count_key(&method, &route, watch_flag);
    if let Route::Object(p) = &route {
        let agent = req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        server.record_access(
            agent,
            super::Access {
                verb: key.0.clone(),
                group: p.group.clone(),
                resource: key.1.clone(),
                namespace: p.namespace.clone(),
            },
        );
    }
    server.count(key);

    let faults = server.faults();
    if faults.is_blocked(peer) || faults.take_drop() {
        return Err(Dropped);
    }
    let latency = faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = faults.take_failure() {
        return Ok(error_response(&ApiError::injected(code)));
    }
    let mut body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    // kubectl's typed client sends Namespaces, Services and ConfigMaps as
    // protobuf: those are decoded. Other protobuf or CBOR bodies get the
    // 415 kube-apiserver sends for a media type it cannot decode (client-go
    // retries CBOR in JSON on it).
    let mut content_type = content_type;
    let base_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if !body.is_empty() && base_type == "application/vnd.kubernetes.protobuf" {
        match super::protobuf::decode(&body) {
            Ok(v) => {
                body = Bytes::from(v.to_string());
                content_type = "application/json".into();
            }
            Err(e) => {
                tracing::debug!(error = %e, "protobuf body refused");
                return Ok(error_response(&ApiError::unsupported_body(&base_type)));
            }
        }
    } else if !body.is_empty() && base_type == "application/cbor" {
        return Ok(error_response(&ApiError::unsupported_body(&base_type)));
    }
    let result = match route {
        Route::Version if method == Method::GET => Ok(json_response(200, &discovery::version())),
        Route::OpenApiV3Root if method == Method::GET => Ok(json_response(
            200,
            &openapi::v3_root(&server.lock().registry),
        )),
        Route::OpenApiV3(g, v) if method == Method::GET => {
            let doc = openapi::v3_group_version(&server.lock().registry, &g, &v);
            doc.map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::OpenApiV2 if method == Method::GET => {
            // Only JSON is served; a client that accepts nothing else (kubectl's
            // protobuf-only request) gets 406 and moves on.
            if accept.is_empty() || accept.contains("json") || accept.contains("*/*") {
                Ok(json_response(200, &openapi::v2(&server.lock().registry)))
            } else {
                Err(ApiError::not_acceptable(&accept))
            }
        }
        Route::CoreVersions if method == Method::GET => {
            Ok(json_response(200, &discovery::core_versions()))
        }
        Route::Groups if method == Method::GET => Ok(json_response(
            200,
            &discovery::group_list(&server.lock().registry),
        )),
        Route::Group(g) if method == Method::GET => discovery::group(&server.lock().registry, &g)
            .map(|d| json_response(200, &d))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::Resources(g, v) if method == Method::GET => {
            discovery::resource_list(&server.lock().registry, &g, &v)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::Object(p) => object(
            &server,
            peer,
            &method,
            &path,
            &query,
            &content_type,
            &accept,
            p,
            &body,
        ),
        Route::Unknown => Err(ApiError::no_route(&path)),
        _ => Err(ApiError::method_not_allowed(method.as_str(), &path)),
    };
    Ok(result.unwrap_or_else(|e| error_response(&e)))
}

/// A create or replace body: YAML when the client says so (the Python
/// client and `curl` users may), JSON otherwise.
fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    if base == "application/yaml" {
        return serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        });
    }
    parse_json(body)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn list_doc(res: &ResourceType, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

#[allow(clippy::too_many_arguments)]
fn object(
    server: &ApiServer,
    peer: IpAddr,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
    accept: &str,
    p: ObjectPath,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let res: Arc<ResourceType> = server
        .lock()
        .registry
        .lookup(&p.group, &p.version, &p.plural)
        .ok_or_else(|| ApiError::no_route(path))?;
    if p.namespace.is_some() && !res.namespaced {
        return Err(ApiError::no_route(path));
    }
    let status_only = match p.subresource.as_deref() {
        None => false,
        Some("status") if res.status_subresource => true,
        Some(_) => return Err(ApiError::no_route(path)),
    };
    // Namespaced writes without a namespace in the path are not routable.
    let ns = p.namespace.as_deref();
    let name = p.name.as_deref();
    let fv = FieldValidation::from_query(query_param(query, "fieldValidation").as_deref());
    let table = printing::wants_table(accept);
    let include =
        printing::IncludeObject::from_query(query_param(query, "includeObject").as_deref());
    let as_table = |objs: &[&Value], rv: Option<u64>, version: &str| {
        printing::table(&res, objs, rv, version, include, jiff::Timestamp::now())
    };
    match (method, name) {
        (&Method::GET, Some(name)) => {
            let obj = server.lock().get(&res, ns, name)?;
            match table {
                Some(v) => Ok(json_response(200, &as_table(&[&obj], None, v))),
                None => Ok(json_response(200, &obj)),
            }
        }
        (&Method::GET, None) => {
            let mut params = ListParams::from_query(query)?;
            params.fields.rewrite_paths(|p| res.field_path(p));
            if params.watch {
                let transform: Option<watch::Transform> = table.map(|v| {
                    let res = res.clone();
                    let transform: watch::Transform = Arc::new(move |o: &Value| {
                        printing::table(&res, &[o], None, v, include, jiff::Timestamp::now())
                    });
                    transform
                });
                let start = server.lock().watch(&res, ns, &params);
                let body = match start {
                    Ok(start) => watch::stream(
                        start,
                        WatchContext {
                            res: res.clone(),
                            ns: ns.map(str::to_string),
                            params,
                            peer,
                            kill: server.faults().subscribe(),
                            bookmark_interval: server.bookmark_interval(),
                            transform,
                        },
                    ),
                    Err(e) if e.code == 410 => watch::error_body(&e),
                    Err(e) => return Err(e),
                };
                let mut r = Response::new(body);
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                return Ok(r);
            }
            let (rv, items) = server.lock().list(&res, ns, &params);
            match table {
                Some(v) => {
                    let refs: Vec<&Value> = items.iter().collect();
                    Ok(json_response(200, &as_table(&refs, Some(rv), v)))
                }
                None => Ok(json_response(200, &list_doc(&res, rv, items))),
            }
        }
        (&Method::POST, None) if !status_only => {
            if res.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed("POST", path));
            }
            let obj = server
                .lock()
                .create_with(&res, ns, parse_body(content_type, body)?, fv)?;
            Ok(json_response(201, &obj))
        }
        (&Method::PUT, Some(name)) => {
            let obj = server.lock().replace(
                &res,
                ns,
                name,
                parse_body(content_type, body)?,
                status_only,
                fv,
            )?;
            Ok(json_response(200, &obj))
        }
        (&Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(content_type)?;
            let patch_body = patch::parse_body(kind, body)?;
            let manager = query_param(query, "fieldManager");
            let (obj, created) = server.lock().patch(
                &res,
                ns,
                name,
                kind,
                &patch_body,
                status_only,
                manager.as_deref(),
                fv,
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        (&Method::DELETE, Some(name)) if !status_only => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse_json(body)?
            };
            let obj = server.lock().delete(&res, ns, name, &options)?;
            Ok(json_response(200, &obj))
        }
        (&Method::DELETE, None) => {
            let params = ListParams::from_query(query)?;
            let mut store = server.lock();
            let items = store.delete_collection(&res, ns, &params)?;
            let rv = store.resource_version();
            Ok(json_response(200, &list_doc(&res, rv, items)))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), path)),
    }
}

/// Serves one accepted connection until it closes or `shutdown` fires.
pub async fn connection(
    server: ApiServer,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let svc = hyper::service::service_fn(move |req| handle(server.clone(), peer.ip(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::trace!(error = %e, %peer, "apiserver connection ended");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_services(_g: &str, _v: &str, p: &str) -> bool {
        p == "services"
    }

    #[test]
    fn routes() {
        assert_eq!(route("/version", ns_services), Route::Version);
        assert_eq!(
            route("/api/v1/namespaces/default/services/a/status", ns_services),
            Route::Object(ObjectPath {
                group: String::new(),
                version: "v1".into(),
                namespace: Some("default".into()),
                plural: "services".into(),
                name: Some("a".into()),
                subresource: Some("status".into()),
            })
        );
        // A namespace's own status path is not a namespaced resource.
        assert_eq!(
            route("/api/v1/namespaces/default/status", ns_services),
            Route::Object(ObjectPath {
                group: String::new(),
                version: "v1".into(),
                namespace: None,
                plural: "namespaces".into(),
                name: Some("default".into()),
                subresource: Some("status".into()),
            })
        );
        assert_eq!(
            route("/apis/l2lb.io/v1beta1", ns_services),
            Route::Resources("l2lb.io".into(), "v1beta1".into())
        );
    }
}

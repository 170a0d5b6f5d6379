//! Who is calling and what they may do: the authentication layer over every route the server serves (HTTP Basic,
//! bearer tokens, or the client certificate the TLS handshake verified), the principal it leaves in each request's
//! extensions, and the checks the handlers and the systems' routes ([`guard_system`]) make against the ACLs, with the
//! same decisions the Kafka listener makes (`weir_security::Security::authorize`).
//!
//! A browser that logged in to the web console (`session.rs`) sends a session cookie instead; a request that changes
//! something with it must also carry the console's header ([`CONSOLE_HEADER`]), which another site cannot make a
//! browser send.
//!
//! Credentials are checked on every request (HTTP has no session): a Basic password costs one SHA-256 once it has
//! matched before (the user store remembers it), a first or wrong one a PBKDF2 run, which is done off the async
//! workers. Nothing of a credential is logged or put in an answer or a metric.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use tokio::sync::Semaphore;
use weir_security::{Operation, ResourceType, Security, ANONYMOUS};

use crate::error::{ApiError, ErrorCode};
use crate::HttpConfig;

/// The principal a request was authenticated as (`User:alice`, `User:CN=alice,O=weir` for a client certificate), or
/// [`weir_security::ANONYMOUS`]: in every request's extensions, for the handlers of the systems' routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// The connection a request arrived on, put in each request's extensions by the accept loop (`server.rs`); absent
/// when a router is called in-process (tests).
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// The principal of the client certificate the TLS handshake verified, worked out once per connection.
    pub cert_principal: Option<Arc<str>>,
}

/// What the authentication layer needs, from [`HttpConfig`]. Not `Debug`: it holds the user store.
#[derive(Clone)]
pub(crate) struct Auth {
    security: Arc<Security>,
    open_paths: Arc<[String]>,
    /// Password checks running at once, at most one a core: a flood of wrong passwords (each a PBKDF2 run) then
    /// waits its turn instead of taking every core and tokio's whole blocking pool.
    password_checks: Arc<Semaphore>,
}

impl Auth {
    pub fn new(config: &HttpConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Auth {
            security: config.security.clone(),
            open_paths: config.open_paths.iter().cloned().collect(),
            password_checks: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// What a request may do: its principal and client host, and the security that decides. The authentication layer
/// puts it in every request it lets through; handlers take it as an extractor. `Security`'s `Debug` would
/// print the user store (SCRAM keys), so its `Debug` shows the principal and host only.
#[derive(Clone)]
pub struct Access {
    security: Arc<Security>,
    principal: Arc<str>,
    /// The client's IP address as ACLs name hosts; `unknown` in-process, which only `*` ACLs match.
    host: Arc<str>,
}

/// The cookie a web console session rides in (`sessions.rs`).
pub(crate) const SESSION_COOKIE: &str = "weir_session";

/// The header the web console sends with every request. A request that authenticates with the session cookie may
/// change something (any method but GET and HEAD) only with it: another site's page can make a browser send the
/// cookie, but not a custom header (that needs a CORS preflight, which this server never allows), so a forged
/// request is refused.
pub(crate) const CONSOLE_HEADER: &str = "x-weir-console";

/// The console's login route: served without credentials, since it is where they are given.
pub(crate) const LOGIN_PATH: &str = "/console/login";

/// What the `Authorization` header holds, or else the session cookie.
enum Credentials {
    None,
    /// A web console session's id, from the cookie.
    Session(String),
    /// The principal of a live session (a checked [`Credentials::Session`]).
    LoggedIn(String),
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// Not something any client sends on purpose; the reason, which never quotes the header.
    Malformed(&'static str),
}

/// The session id in the request's cookies, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return match session_cookie(headers) {
            Some(id) => Credentials::Session(id.to_string()),
            None => Credentials::None,
        };
    };
    if all.next().is_some() {
        return Credentials::Malformed("more than one Authorization header");
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed("the Authorization header is not ASCII");
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credentials::Malformed("the Basic credentials are not base64");
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Credentials::Malformed("the Basic credentials are not UTF-8");
        };
        match decoded.split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Credentials::Basic { user: user.to_string(), password: password.to_string() }
            }
            _ => Credentials::Malformed("the Basic credentials are not user:password"),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            Credentials::Malformed("the bearer token is empty")
        } else {
            Credentials::Bearer(rest.to_string())
        }
    } else {
        Credentials::Malformed("the Authorization scheme is neither Basic nor Bearer")
    }
}

/// 401 with the challenge browsers and HTTP clients answer with Basic credentials; without it for the web console
/// (`challenge` false), which asks with its own login page rather than the browser's dialog.
fn unauthenticated(message: &str, challenge: bool) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
    if challenge {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"weir\""));
    }
    response
}

/// Whether a 401 to this request should carry the Basic challenge: not for the console's own paths or requests.
fn challenges(req: &Request) -> bool {
    !req.uri().path().starts_with("/console/") && !req.headers().contains_key(CONSOLE_HEADER)
}

fn failed(reason: &'static str, peer: Option<&Peer>, message: &str, challenge: bool) -> Response {
    metrics::counter!("weir_http_authentication_failures_total", "reason" => reason).increment(1);
    tracing::debug!(peer = ?peer.map(|p| p.addr), reason, "HTTP request refused: not authenticated");
    unauthenticated(message, challenge)
}

/// The authentication layer over every route of the server. Open paths (`/health`, `/metrics`) pass as they are, as
/// the anonymous principal (or the client certificate's). Elsewhere an `Authorization` header decides: Basic or
/// Bearer credentials that check out give their user, wrong or malformed ones get 401 whether or not authentication
/// is required (a client that sends credentials means to use them); without one, the client certificate's principal,
/// else anonymous, which is refused with 401 when authentication is required.
pub(crate) async fn authenticate(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().cloned();
    let from_cert = peer.as_ref().and_then(|p| p.cert_principal.clone());
    let path = req.uri().path();
    let open = path == LOGIN_PATH || auth.open_paths.iter().any(|p| p == path);
    let challenge = challenges(&req);
    let mut credentials = credentials(req.headers());
    if let Credentials::Session(id) = &credentials {
        let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
        match auth.security.check_session(id) {
            // A forged cross-site request carries the cookie but cannot carry the console's header.
            Some(_) if changes && !req.headers().contains_key(CONSOLE_HEADER) => {
                metrics::counter!("weir_http_authentication_failures_total", "reason" => "session_without_header")
                    .increment(1);
                return ApiError::new(
                    ErrorCode::Forbidden,
                    format!("a request made with the console's session cookie must send the {CONSOLE_HEADER} header"),
                )
                .into_response();
            }
            Some(principal) => credentials = Credentials::LoggedIn(principal),
            // Logged out, expired, or from before a restart: as if there were no cookie.
            None => credentials = Credentials::None,
        }
    }
    let principal: Arc<str> = if open {
        from_cert.unwrap_or_else(|| ANONYMOUS.into())
    } else {
        match credentials {
            Credentials::LoggedIn(principal) => principal.into(),
            // Checked above (a live session is `LoggedIn`, any other `None`): never reached, refused if it were.
            Credentials::Session(_) => {
                return failed("malformed", peer.as_ref(), "Authentication failed: an unchecked session.", challenge)
            }
            Credentials::None => match from_cert {
                Some(p) => p,
                None if auth.security.requires_authentication() => {
                    return failed(
                        "missing",
                        peer.as_ref(),
                        "Authentication required: send HTTP Basic credentials, a bearer token or a client certificate.",
                        challenge,
                    );
                }
                None => ANONYMOUS.into(),
            },
            // A password seen before is one SHA-256 away: answered here, without a trip to the blocking pool.
            Credentials::Basic { user, password }
                if auth.security.check_remembered_password(&user, &password).is_some() =>
            {
                format!("User:{user}").into()
            }
            Credentials::Basic { user, password } => {
                let security = auth.security.clone();
                // The semaphore is never closed.
                let Ok(permit) = auth.password_checks.clone().acquire_owned().await else {
                    return ApiError::internal("the password checks stopped").into_response();
                };
                // PBKDF2 when the password was not seen before: milliseconds of CPU, off the async workers.
                let checked = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    security.check_password(&user, &password)
                })
                .await;
                match checked {
                    Ok(Some(p)) => p.into(),
                    Ok(None) => {
                        return failed(
                            "wrong_password",
                            peer.as_ref(),
                            "Authentication failed: wrong user name or password.",
                            challenge,
                        )
                    }
                    Err(e) => {
                        return ApiError::internal(format!("checking the credentials failed: {e}")).into_response()
                    }
                }
            }
            Credentials::Bearer(token) => match auth.security.check_token(&token) {
                Some(p) => p.into(),
                None => {
                    return failed(
                        "wrong_token",
                        peer.as_ref(),
                        "Authentication failed: unknown bearer token.",
                        challenge,
                    )
                }
            },
            Credentials::Malformed(why) => {
                return failed("malformed", peer.as_ref(), &format!("Authentication failed: {why}."), challenge)
            }
        }
    };
    // ACLs name IPv4 clients by their IPv4 address, also when the listener is on an IPv6 socket.
    let host: Arc<str> = match &peer {
        Some(p) => p.addr.ip().to_canonical().to_string().into(),
        None => "unknown".into(),
    };
    req.extensions_mut().insert(Principal(principal.to_string()));
    req.extensions_mut().insert(Access { security: auth.security, principal, host });
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Access>().cloned().ok_or_else(not_authenticated_here)
    }
}

/// A guarded handler reached without the authentication layer: a router assembled outside this crate. Refused
/// rather than let through unchecked.
fn not_authenticated_here() -> ApiError {
    ApiError::internal("this route checks ACLs but the request did not pass weir-http's authentication layer")
}

fn forbidden(what: &str, names: &str) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, format!("Not authorized to access {what}: {names}"))
}

/// The principal and host only: `Security` holds the user store.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("principal", &self.principal).field("host", &self.host).finish_non_exhaustive()
    }
}

impl Access {
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Whether the principal may do `operation` on the resource (always, without an authorizer).
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed = self.security.authorize(&self.principal, &self.host, operation, resource_type, name);
        if !allowed {
            tracing::debug!(
                principal = %self.principal, host = %self.host, %operation, %resource_type, name,
                "HTTP request denied by the ACLs"
            );
        }
        allowed
    }

    /// `operation` on every one of `topics`, else 403 naming those refused (Kafka's `TopicAuthorizationException`).
    pub fn topics<'a>(&self, operation: Operation, topics: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
        let mut refused: Vec<&str> =
            topics.into_iter().filter(|t| !self.allows(operation, ResourceType::Topic, t)).collect();
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable();
        refused.dedup();
        Err(forbidden("topics", &format!("[{}]", refused.join(", "))))
    }

    pub fn topic(&self, operation: Operation, topic: &str) -> Result<(), ApiError> {
        self.topics(operation, [topic])
    }

    /// `operation` on the group, else 403 (Kafka's `GroupAuthorizationException`).
    pub fn group(&self, operation: Operation, group: &str) -> Result<(), ApiError> {
        if self.allows(operation, ResourceType::Group, group) {
            Ok(())
        } else {
            Err(forbidden("group", group))
        }
    }

    /// Creating `topic`: CREATE on the cluster or on the topic, as Kafka asks of an auto-created topic.
    pub fn create_topic(&self, topic: &str) -> Result<(), ApiError> {
        let cluster = self.security.authorize(
            &self.principal,
            &self.host,
            Operation::Create,
            ResourceType::Cluster,
            weir_security::CLUSTER,
        );
        if cluster || self.allows(Operation::Create, ResourceType::Topic, topic) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "Not authorized to create topic {topic}: it does not exist, and creating it needs CREATE on the \
                     cluster or the topic"
                ),
            ))
        }
    }
}

/// Wraps one system's routes so that, when the authorizer is on, GET and HEAD need READ and every other method WRITE
/// on the system `name` (`ResourceType::System`); refused requests get 403 (40301). Authentication is the server's
/// (every route it serves passes it). A router with no routes is returned as it is.
pub fn guard_system(name: &str, routes: Router) -> Router {
    if !routes.has_routes() {
        return routes;
    }
    let name: Arc<str> = name.into();
    routes.route_layer(axum::middleware::from_fn_with_state(name, system_guard))
}

async fn system_guard(State(name): State<Arc<str>>, req: Request, next: Next) -> Response {
    let Some(access) = req.extensions().get::<Access>() else {
        return not_authenticated_here().into_response();
    };
    let operation =
        if matches!(*req.method(), Method::GET | Method::HEAD) { Operation::Read } else { Operation::Write };
    if !access.allows(operation, ResourceType::System, &name) {
        return forbidden("system", &name).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Credentials {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        credentials(&headers)
    }

    #[test]
    fn authorization_headers_are_read_as_clients_send_them() {
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert!(matches!(parse(&format!("Basic {basic}")),
            Credentials::Basic { ref user, ref password } if user == "alice" && password == "pa:ss"));
        assert!(matches!(parse(&format!("basic  {basic} ")), Credentials::Basic { .. }), "scheme case, spaces");
        assert!(matches!(parse("Bearer weir_abc"), Credentials::Bearer(ref t) if t == "weir_abc"));
        assert!(matches!(parse("BEARER weir_abc"), Credentials::Bearer(_)));
        for bad in ["Basic !!!", "Basic", "Bearer", "Bearer  ", "Digest x", "Basic Zm9v"] {
            assert!(matches!(parse(bad), Credentials::Malformed(_)), "{bad}");
        }
        let colon_first = base64::engine::general_purpose::STANDARD.encode(":pw");
        assert!(matches!(parse(&format!("Basic {colon_first}")), Credentials::Malformed(_)), "no user name");
        assert!(matches!(credentials(&HeaderMap::new()), Credentials::None));
        let mut two = HeaderMap::new();
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(matches!(credentials(&two), Credentials::Malformed(_)));
    }
}

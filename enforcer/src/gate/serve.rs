//! One rule's gate socket: HTTP/1.1 (hyper) from the rule's identities, every request
//! judged, then forwarded to dockerd (the requests of one client connection on one
//! connection to dockerd, an upgrade on a connection of its own); bodies and upgraded
//! streams (attach, `BuildKit`'s session) flow through without being buffered.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{
    ApiDenial, RuleGate,
    judge::{self, MAX_BODY, Needs, OWNER_LABEL, Refusal},
    route::{self, BodyJudge, RouteError, form_decode},
};

/// A response body: dockerd's, streamed, or the gate's own.
type Body = BoxBody<Bytes, hyper::Error>;

/// A connection's places in its gate's limits (the gate's and its uid's), held until it and
/// any stream upgraded from it end.
pub type Slot = (tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit);

/// Who is on the other end of a gate connection (`SO_PEERCRED`, set by the kernel at
/// connect: the client cannot choose it).
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub pid: u32,
    pub comm: String,
}

/// Serves one accepted connection until the client closes it; every request on it is
/// judged on its own (keep-alive does not carry a verdict over).
/// `slot` is the connection's place in its gate's limit, held until an upgraded stream
/// spliced from it ends too.
pub async fn connection(stream: UnixStream, shared: Arc<RwLock<Arc<RuleGate>>>, peer: Peer, slot: Arc<Slot>) {
    let upstream = Arc::new(Upstream::default());
    let service = service_fn(move |request| {
        // The rule as it is now: a reload applies from the next request on.
        let gate = Arc::clone(&shared.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let peer = peer.clone();
        let upstream = Arc::clone(&upstream);
        let slot = Arc::clone(&slot);
        async move { Ok::<_, std::convert::Infallible>(handle(request, &gate, &peer, &upstream, slot).await) }
    });
    if let Err(error) = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // A client that never finishes its request head (slowloris) is dropped.
        .header_read_timeout(std::time::Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        log::debug!("gate connection ended: {error}");
    }
}

/// Judges one request and forwards it, or answers the refusal.
async fn handle(
    request: Request<Incoming>,
    gate: &RuleGate,
    peer: &Peer,
    upstream: &Upstream,
    slot: Arc<Slot>,
) -> Response<Body> {
    if gate.retired.load(std::sync::atomic::Ordering::SeqCst) {
        let message = format!(
            "enforcer: rule \"{}\" is no longer in the policy (a reload removed or renamed it); reconnect",
            gate.name
        );
        let mut response = refusal_response(StatusCode::SERVICE_UNAVAILABLE, &message);
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let method = request.method().clone();
    let raw_path = request.uri().path().to_owned();
    match judge_and_forward(request, gate, upstream, slot).await {
        Ok(response) => response,
        Err(refused) => {
            gate.record(ApiDenial {
                peer: peer.clone(),
                method: method.to_string(),
                path: raw_path,
                field: refused.field.clone(),
                reason: refused.reason,
                command: refused.command.clone(),
            })
            .await;
            log::debug!("gate {}: {} {}: {}", gate.name, method, refused.status, refused.message);
            refusal_response(refused.status, &refused.message)
        }
    }
}

/// Why a request was not forwarded.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    /// `endpoint`, `field`, `owner`, `framing`, `body_too_large`, `body`, `upstream`.
    reason: &'static str,
    field: Option<String>,
    command: Option<String>,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Refused {
        Refused { status, reason, field: None, command: None, message }
    }

    fn field(refusal: Refusal) -> Refused {
        Refused {
            status: StatusCode::FORBIDDEN,
            reason: "field",
            field: Some(refusal.field),
            command: None,
            message: refusal.message,
        }
    }
}

/// The docker CLI prints a JSON `message` as `Error response from daemon: <message>`.
fn refusal_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Framing that two HTTP parsers could read differently is refused (request smuggling):
/// a length and chunking together, several lengths, a transfer coding other than chunked.
/// hyper itself answers 400 to differing lengths, a bad chunk and a coding other than
/// chunked. A `Content-Length` next to `Transfer-Encoding: chunked` never gets here: hyper
/// drops it, reads the body as chunked and closes the connection after the request (RFC 9112
/// 6.1 and 6.3), so the gate judges and forwards the chunked body alone (dockerd gets no
/// length) and no second request can be hidden behind it. The checks below are the same rules
/// on what hyper hands over, in case a later version hands over more.
fn check_framing(headers: &HeaderMap) -> Result<(), Refused> {
    let bad = |what: &str| Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: {what}"));
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let codings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if lengths > 1 {
        return Err(bad("several Content-Length headers"));
    }
    if lengths == 1 && !codings.is_empty() {
        return Err(bad("Content-Length together with Transfer-Encoding"));
    }
    if codings.len() > 1 || codings.iter().any(|c| !c.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        return Err(bad("a Transfer-Encoding other than one \"chunked\""));
    }
    Ok(())
}

async fn judge_and_forward(
    mut request: Request<Incoming>,
    gate: &RuleGate,
    upstream: &Upstream,
    slot: Arc<Slot>,
) -> Result<Response<Body>, Refused> {
    check_framing(request.headers())?;
    let path = request.uri().path().to_owned();
    let route = route::route(request.method().as_str(), &path).map_err(|error| match error {
        RouteError::Malformed(why) => Refused::new(
            StatusCode::BAD_REQUEST,
            "framing",
            format!("enforcer: malformed path {path:?}: {why}"),
        ),
        RouteError::Unknown { method, path } => Refused::new(
            StatusCode::FORBIDDEN,
            "endpoint",
            format!(
                "enforcer: rule {:?} refuses {method} {path}: no docker command uses this endpoint",
                gate.name
            ),
        ),
    })?;
    // Before 1.24 dockerd read a HostConfig from the body of a start (and other bodies the
    // judge does not read): the gate speaks only the versions whose bodies it knows.
    if let Some(version) = &route.version
        && !version_judged(version)
    {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "framing",
            format!("enforcer: API version {version} is older than the gate judges (1.24 and later)"),
        ));
    }
    // A container start takes no body from 1.24 on; one that carries a body is someone's
    // old-API trick. (An exec start's body is its Detach/Tty options: streamed as it is.)
    if route.endpoint.pattern.starts_with("/containers/")
        && route.endpoint.pattern.ends_with("/start")
        && has_body(request.headers())
    {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "framing",
            "enforcer: a start request carries no body (its HostConfig belongs to the create)".to_owned(),
        ));
    }
    let endpoint = route.endpoint;
    let query = request.uri().query().map(str::to_owned);
    let query_text = query.as_deref().unwrap_or("");
    if !gate.admits_endpoint(endpoint, query_text) {
        let command = gate.denied_command(endpoint, query_text).map(str::to_owned);
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            reason: "endpoint",
            field: None,
            message: format!(
                "enforcer: rule {:?} refuses {} {}: {}",
                gate.name,
                endpoint.method,
                endpoint.pattern,
                match &command {
                    Some(command) => format!("it is `docker {command}`, which the rule denies"),
                    None => "no docker command uses this endpoint".to_owned(),
                }
            ),
            command,
        });
    }
    if let Some(power) = endpoint.power
        && !gate.limits.powers.contains(&power)
    {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "endpoint",
            format!(
                "enforcer: rule {:?} refuses {} {}: it needs the {:?} power (an admin adds \"{}\" to the \
                 rule's api_powers)",
                gate.name,
                endpoint.method,
                endpoint.pattern,
                power.name(),
                power.name()
            ),
        ));
    }
    // dockerd reads a form body's parameters ahead of the query's: what the gate judged in
    // the query would not be what dockerd does.
    if request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
    {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "framing",
            "enforcer: form-encoded bodies are refused (dockerd would read parameters from them)".to_owned(),
        ));
    }
    // What a request checks about other objects must still hold when dockerd acts on it:
    // the rule's requests that create, change or name containers, volumes and networks run
    // one at a time (the rule's identities cannot rename or remove a checked object in
    // between: a rename of someone else's container is refused below, of its own waits).
    let mutates = !matches!(endpoint.method, "GET" | "HEAD")
        && (endpoint.pattern.starts_with("/containers") || endpoint.body != BodyJudge::Stream);
    // A wait answers when the container exits (its headers too before 1.30): it changes no
    // name, so it never holds the others up.
    let serialised = mutates && !endpoint.pattern.ends_with("/wait") && endpoint.body != BodyJudge::Build;
    let _serial = if serialised { Some(gate.serial.lock().await) } else { None };
    // The rule's identities change only their own containers (rename, remove, start, stop,
    // kill, update, attach, exec, ...), use an endpoint whose own command the rule denies
    // (`attach`, used on the way by `docker run`) only on them, and so an endpoint whose own
    // command is in the rule's `own_only` (`logs`, `inspect`, `cp` there). dockerd is asked
    // who the name, id or id prefix is, and the request goes on to that object's full id:
    // a name given to another container in between reaches nothing, never the other.
    let own_only_command = gate.own_only_command(endpoint, query_text);
    let command = || {
        own_only_command
            .or_else(|| route::commands_for(endpoint, query_text).first().copied())
            .map(str::to_owned)
    };
    let mut judged_id = None;
    // `protect`: any request naming a protected container is refused, reads included.
    let protects = !gate.protect.is_empty();
    let owned_needed = mutates || gate.own_command_denied(endpoint, query_text) || own_only_command.is_some();
    if endpoint.pattern.starts_with("/containers/{name")
        && (owned_needed || protects)
        && let Some(container) = route.params.first()
    {
        let facts = container_owner(&gate.upstream, container).await?;
        let shown = if facts.name.is_empty() || facts.name == *container {
            format!("container {container:?}")
        } else {
            format!("container {container:?} ({})", facts.name)
        };
        check_protect(gate, command(), &shown, &facts)?;
        let owner = facts.owner().map(str::to_owned);
        if owned_needed && owner.as_deref() != Some(gate.name.as_str()) {
            return Err(command_owner_refusal(gate, command(), "container", container, owner));
        }
        judged_id = Some(facts.id);
    }
    // An exec instance is its container's: starting, resizing (and with `exec` in `own_only`
    // inspecting) one needs the container to be the rule's own. Exec ids are no secret
    // (`ExecIDs` of a container's inspect lists them).
    if endpoint.pattern.starts_with("/exec/")
        && (endpoint.method != "GET" || own_only_command.is_some() || protects)
        && let Some(exec) = route.params.first()
    {
        let (id, container, facts) = exec_owner(&gate.upstream, exec).await?;
        check_protect(
            gate,
            command(),
            &format!("exec instance {exec:?} of container {:?}", facts.name),
            &facts,
        )?;
        let owner = facts.owner().map(str::to_owned);
        if (endpoint.method != "GET" || own_only_command.is_some())
            && owner.as_deref() != Some(gate.name.as_str())
        {
            let what = format!("{exec} (of container {container})");
            return Err(command_owner_refusal(gate, command(), "exec instance", &what, owner));
        }
        judged_id = Some(id);
    }
    // An image tag, a volume or a network is removed only by the rule that made it: root's
    // `local/busybox`, `gitea-data` and networks stay.
    if endpoint.method == "DELETE"
        && let Some(name) = route.params.first()
    {
        let looked_up = if endpoint.pattern.starts_with("/images/") {
            Some(("image", format!("/images/{}/json", encode_image(name)), true))
        } else if endpoint.pattern.starts_with("/volumes/") {
            Some(("volume", format!("/volumes/{}", encode_segment(name)), false))
        } else if endpoint.pattern.starts_with("/networks/") {
            Some(("network", format!("/networks/{}", encode_segment(name)), false))
        } else {
            None
        };
        if let Some((kind, path, config_labels)) = looked_up {
            let owner = owner_of(&gate.upstream, &path, config_labels).await?;
            if owner.as_deref() != Some(gate.name.as_str()) {
                return Err(owner_refusal(gate, "path", kind, name, owner));
            }
        }
    }
    let mut target = match &judged_id {
        Some(id) => route.target_with_first_param(id).ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                format!(
                    "enforcer: dockerd resolved {:?} to {id:?}, which names no such object",
                    route.params[0]
                ),
            )
        })?,
        None => route.target(),
    };
    if endpoint.body == BodyJudge::Build {
        let judged = judge::judge_build_query(query_text, &gate.limits).map_err(Refused::field)?;
        // A tag another owner's image holds would make its users run the rule's build.
        for tag in judge::build_tags(query_text) {
            match owner_of(&gate.upstream, &format!("/images/{}/json", encode_image(&tag)), true).await {
                Err(refused) if refused.status == StatusCode::NOT_FOUND => {}
                Err(refused) => return Err(refused),
                Ok(owner) if owner.as_deref() == Some(gate.name.as_str()) => {}
                Ok(owner) => return Err(owner_refusal(gate, "t", "image", &tag, owner)),
            }
        }
        if !judged.is_empty() {
            target.push('?');
            target.push_str(&judged);
        }
    } else if (endpoint.pattern.ends_with("/prune") && endpoint.pattern != "/build/prune")
        || (gate.see_own && endpoint.method == "GET" && LISTINGS.contains(&endpoint.pattern))
    {
        target.push('?');
        target.push_str(&own_prune_filters(query_text, &gate.name)?);
    } else if let Some(query) = &query {
        target.push('?');
        target.push_str(query);
    }
    let upgrade = wants_upgrade(request.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut builder = Request::builder().method(parts.method.clone()).uri(&target);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name, upgrade) && name != header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    let forward = if matches!(endpoint.body, BodyJudge::Stream | BodyJudge::Build) {
        if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            builder = builder.header(header::CONTENT_LENGTH, length);
        }
        builder.body(body.boxed())
    } else {
        let bytes = read_body(body).await?;
        let judged =
            judge::judge_body(endpoint.body, &bytes, &gate.limits, &|p: &Path| judge::resolve_source(p))
                .map_err(Refused::field)?;
        check_owners(gate, &judged.needs).await?;
        builder = builder.header(header::CONTENT_LENGTH, judged.body.len());
        builder.body(full(Bytes::from(judged.body)))
    }
    .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: {e}")))?;
    let mut response = if upgrade {
        send(&gate.upstream, forward, true).await?
    } else {
        upstream.send(&gate.upstream, forward).await?
    };
    if let Some(downstream) = downstream_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _slot = slot;
            match (downstream.await, upstream.await) {
                (Ok(client), Ok(daemon)) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(daemon))
                            .await;
                }
                (client, daemon) => log::debug!("gate upgrade failed: client {client:?}, daemon {daemon:?}"),
            }
        });
    }
    Ok(response.map(http_body_util::BodyExt::boxed))
}

/// Reads a body the judge needs, at most `MAX_BODY` bytes (more: 413, never forwarded).
async fn read_body(body: Incoming) -> Result<Bytes, Refused> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("enforcer: the request body is larger than the gate reads ({MAX_BODY} bytes)"),
        )),
        Err(error) => {
            Err(Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: bad body: {error}")))
        }
    }
}

/// Every object a request names (`VolumesFrom`, `container:X`, a named volume) must be the
/// rule's own; a volume that does not exist yet is new, so the rule's.
async fn check_owners(gate: &RuleGate, needs: &Needs) -> Result<(), Refused> {
    for (field, container) in &needs.containers {
        let owner =
            owner_of(&gate.upstream, &format!("/containers/{}/json", encode_segment(container)), true)
                .await?;
        if owner.as_deref() != Some(gate.name.as_str()) {
            return Err(owner_refusal(gate, field, "container", container, owner));
        }
    }
    for (field, network) in &needs.networks {
        let driver = network_driver(&gate.upstream, network).await?;
        if !matches!(driver.as_deref(), Some("bridge" | "null" | "overlay")) {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                reason: "field",
                field: Some(field.clone()),
                command: None,
                message: format!(
                    "enforcer: rule {:?} refuses {field}: network {network:?} has driver {}, which reaches the \
                     host's network; use a bridge network",
                    gate.name,
                    driver.as_deref().unwrap_or("unknown")
                ),
            });
        }
    }
    for (field, volume) in &needs.volumes {
        match owner_of(&gate.upstream, &format!("/volumes/{}", encode_segment(volume)), false).await {
            // A new volume: the gate creates it with the rule's label, so that the next
            // container may mount it again (dockerd's own would have no owner).
            Err(refused) if refused.status == StatusCode::NOT_FOUND => create_volume(gate, volume).await?,
            Err(refused) => return Err(refused),
            Ok(owner) if owner.as_deref() == Some(gate.name.as_str()) => {}
            Ok(owner) => return Err(owner_refusal(gate, field, "volume", volume, owner)),
        }
    }
    Ok(())
}

fn owner_refusal(gate: &RuleGate, field: &str, kind: &str, name: &str, owner: Option<String>) -> Refused {
    let held = match owner {
        Some(owner) => format!("it belongs to rule {owner:?}"),
        None => "it was not created through this rule's gate".to_owned(),
    };
    Refused {
        status: StatusCode::FORBIDDEN,
        reason: "owner",
        field: Some(field.to_owned()),
        command: None,
        message: format!(
            "enforcer: rule {:?} refuses {field}: {kind} {name:?} is not the rule's own ({held}); use a {kind} \
             you created",
            gate.name
        ),
    }
}

/// A request on an object the rule does not own, in the words of the command that sent it:
/// `enforcer: rule "ai-worker-docker" refuses docker container exec on container "gitea": …`.
fn command_owner_refusal(
    gate: &RuleGate,
    command: Option<String>,
    kind: &str,
    name: &str,
    owner: Option<String>,
) -> Refused {
    let held = match &owner {
        Some(owner) => format!("it belongs to rule {owner:?}"),
        None => "it has no owner: it was not created through this rule's gate".to_owned(),
    };
    let what = command.as_deref().map_or_else(|| "this request".to_owned(), |c| format!("docker {c}"));
    Refused {
        status: StatusCode::FORBIDDEN,
        reason: "owner",
        field: Some("path".to_owned()),
        message: format!(
            "enforcer: rule {:?} refuses {what} on {kind} {name:?}: it is not the rule's own ({held}); the \
             rule may do this only to what it created",
            gate.name
        ),
        command,
    }
}

/// The listings `see = "own"` narrows to the rule's own objects (with the prunes' filter).
const LISTINGS: [&str; 4] = ["/containers/json", "/volumes", "/networks", "/images/json"];

/// Creates the named local volume `name` with the rule's owner label.
async fn create_volume(gate: &RuleGate, name: &str) -> Result<(), Refused> {
    let body = serde_json::json!({ "Name": name, "Labels": { OWNER_LABEL: gate.name } }).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/volumes/create")
        .header(header::HOST, "docker")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(Bytes::from(body)))
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: {e}")))?;
    let response = send(&gate.upstream, request, false).await?;
    let status = response.status();
    let _ = read_upstream(response.into_body()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(Refused::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("enforcer: dockerd answered {status} when the gate created volume {name:?}"),
        ))
    }
}

/// `filters` of a prune request, narrowed to the rule's own objects: the rule's identities
/// prune what they made, never another owner's stopped containers or unused volumes.
fn own_prune_filters(query: &str, rule: &str) -> Result<String, Refused> {
    let bad =
        |why: &str| Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: filters: {why}"));
    let mut filters = serde_json::Map::new();
    let mut rest = Vec::new();
    let mut seen = false;
    // dockerd (Go's url.ParseQuery) decodes keys too: `filter%73` is its `filters`. Go refuses
    // `;` separators since 1.17, older ones split on them: refused, not guessed.
    if query.contains(';') {
        return Err(bad("a ';' in the query"));
    }
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = form_decode(raw_key).ok_or_else(|| bad("a bad %-escape in a key"))?;
        let key = key.as_str();
        if key == "filters" {
            let text = form_decode(value).ok_or_else(|| bad("a bad %-escape"))?;
            // dockerd reads the first of two; which one the gate narrowed must not matter.
            if seen {
                return Err(bad("given twice"));
            }
            seen = true;
            let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad("not JSON"))?;
            filters = parsed.as_object().cloned().ok_or_else(|| bad("not a JSON object"))?;
        } else if key.eq_ignore_ascii_case("filters") {
            return Err(bad("a differently spelt filters parameter"));
        } else {
            rest.push(part.to_owned());
        }
    }
    let own = format!("{OWNER_LABEL}={rule}");
    match filters.entry("label").or_insert_with(|| serde_json::Value::Object(serde_json::Map::new())) {
        serde_json::Value::Object(labels) => {
            labels.insert(own, serde_json::Value::Bool(true));
        }
        serde_json::Value::Array(labels) => labels.push(serde_json::Value::String(own)),
        _ => return Err(bad("label is neither a map nor a list")),
    }
    let encoded = serde_json::Value::Object(filters).to_string();
    rest.push(format!("filters={}", encode_segment(&encoded)));
    Ok(rest.join("&"))
}

/// The driver of the network dockerd resolves `network` (name, id or id prefix) to.
async fn network_driver(upstream: &Path, network: &str) -> Result<Option<String>, Refused> {
    let value = inspect(upstream, &format!("/networks/{}", encode_segment(network))).await?;
    Ok(value.get("Driver").and_then(|d| d.as_str()).map(str::to_owned))
}

/// What the gate judges the container dockerd resolves `container` (a name, an id or an id
/// prefix) to by; a missing one is a 404 refusal in the CLI's words.
async fn container_owner(upstream: &Path, container: &str) -> Result<ContainerFacts, Refused> {
    let value = inspect(upstream, &format!("/containers/{}/json", encode_segment(container)))
        .await
        .map_err(|refused| not_found_as(refused, &format!("No such container: {container}")))?;
    ContainerFacts::from_inspect(&value)
        .map_err(|why| Refused::new(StatusCode::BAD_GATEWAY, "upstream", format!("enforcer: {why}")))
}

/// The container the gate would judge for `container`, for `enforcer check --container`.
pub(super) async fn inspect_container(upstream: &Path, container: &str) -> anyhow::Result<ContainerFacts> {
    container_owner(upstream, container).await.map_err(|refused| anyhow::anyhow!("{}", refused.message))
}

/// What the gate judges a container by, as dockerd resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    /// The full id (64 hex digits).
    pub id: String,
    /// Its name without the leading `/`.
    pub name: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
}

impl ContainerFacts {
    /// Reads dockerd's inspect answer. An answer without a full id, or with labels that are
    /// not a map, is not what dockerd sends: the gate cannot say whose it is.
    pub fn from_inspect(value: &serde_json::Value) -> Result<ContainerFacts, String> {
        let id = id_of(value, "Id")?;
        let name = value.get("Name").and_then(|n| n.as_str()).unwrap_or("");
        let labels = match value.get("Config").and_then(|c| c.get("Labels")) {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(labels)) => labels.clone(),
            Some(_) => return Err("dockerd's answer has labels that are not a map".to_owned()),
        };
        Ok(ContainerFacts { id, name: name.strip_prefix('/').unwrap_or(name).to_owned(), labels })
    }

    /// The rule that owns it (its owner label), if any.
    pub fn owner(&self) -> Option<&str> {
        self.labels.get(OWNER_LABEL).and_then(|o| o.as_str())
    }
}

/// Refuses a request on a container the rule protects (`protect`): not even reads.
fn check_protect(
    gate: &RuleGate,
    command: Option<String>,
    what: &str,
    facts: &ContainerFacts,
) -> Result<(), Refused> {
    let Some(entry) = gate.protect.iter().find(|p| p.matches(&facts.name, &facts.labels)) else {
        return Ok(());
    };
    let shown = command.as_deref().map_or_else(|| "this request".to_owned(), |c| format!("docker {c}"));
    let entry = match entry {
        crate::policy::Protect::Name(name) => format!("protect = [{name:?}]"),
        crate::policy::Protect::Label(key, None) => format!("protect = [\"label={key}\"]"),
        crate::policy::Protect::Label(key, Some(value)) => format!("protect = [\"label={key}={value}\"]"),
    };
    Err(Refused {
        status: StatusCode::FORBIDDEN,
        reason: "protect",
        field: Some("path".to_owned()),
        message: format!(
            "enforcer: rule {:?} refuses {shown} on {what}: the rule protects it ({entry}); its identities may \
             not read or change it",
            gate.name
        ),
        command,
    })
}

/// The full id of exec instance `exec`, its container's id, and that container's owner.
async fn exec_owner(upstream: &Path, exec: &str) -> Result<(String, String, ContainerFacts), Refused> {
    let value = inspect(upstream, &format!("/exec/{}/json", encode_segment(exec)))
        .await
        .map_err(|refused| not_found_as(refused, &format!("No such exec instance: {exec}")))?;
    let id = full_id(&value, "ID")?;
    let container = full_id(&value, "ContainerID")?;
    let facts = container_owner(upstream, &container).await?;
    Ok((id, container, facts))
}

fn not_found_as(refused: Refused, message: &str) -> Refused {
    if refused.status == StatusCode::NOT_FOUND {
        Refused::new(StatusCode::NOT_FOUND, "owner", message.to_owned())
    } else {
        refused
    }
}

/// dockerd's ids are 64 lowercase hex digits; anything else in an answer is refused, never
/// put into a path.
fn full_id(value: &serde_json::Value, key: &str) -> Result<String, Refused> {
    id_of(value, key)
        .map_err(|why| Refused::new(StatusCode::BAD_GATEWAY, "upstream", format!("enforcer: {why}")))
}

fn id_of(value: &serde_json::Value, key: &str) -> Result<String, String> {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|id| id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .map(str::to_owned)
        .ok_or_else(|| format!("dockerd's answer has no full {key} (64 hex digits)"))
}

/// The owner label of the object at `path` (a container's `Config.Labels`, a volume's
/// `Labels`). A missing object is 404 for volumes (the caller decides) and a refusal for
/// containers.
async fn owner_of(upstream: &Path, path: &str, container: bool) -> Result<Option<String>, Refused> {
    let value = inspect(upstream, path).await?;
    let labels =
        if container { value.get("Config").and_then(|c| c.get("Labels")) } else { value.get("Labels") };
    Ok(labels.and_then(|l| l.get(OWNER_LABEL)).and_then(|o| o.as_str()).map(str::to_owned))
}

/// dockerd's JSON answer to `GET path`; a missing object is a 404 refusal.
async fn inspect(upstream: &Path, path: &str) -> Result<serde_json::Value, Refused> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, "docker")
        .body(full(Bytes::new()))
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "framing", format!("enforcer: {e}")))?;
    let response = send(upstream, request, false).await?;
    let status = response.status();
    let body = read_upstream(response.into_body()).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "owner",
            format!("enforcer: {path}: no such object"),
        ));
    }
    if !status.is_success() {
        return Err(Refused::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("enforcer: dockerd answered {status} when the gate looked up {path}"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Refused::new(StatusCode::BAD_GATEWAY, "upstream", format!("enforcer: dockerd's answer: {e}"))
    })
}

async fn read_upstream(body: Incoming) -> Result<Bytes, Refused> {
    Limited::new(body, 16 * MAX_BODY).collect().await.map(http_body_util::Collected::to_bytes).map_err(|e| {
        Refused::new(StatusCode::BAD_GATEWAY, "upstream", format!("enforcer: reading dockerd's answer: {e}"))
    })
}

/// One client connection's connection to dockerd, kept for its next request. hyper serves
/// a client connection's requests one at a time and reads the next one only once the
/// previous answer was written whole, so the connection to dockerd is idle again by then
/// (`ready` waits for that; an answer cut short closes it, and the next request opens a
/// new one). Upgrades never use it: their connection becomes the spliced stream.
#[derive(Default)]
struct Upstream(std::sync::Mutex<Option<(PathBuf, SendRequest)>>);

type SendRequest = hyper::client::conn::http1::SendRequest<Body>;

impl Upstream {
    /// Forwards `request` on the kept connection when it is still open (and to the same
    /// socket: a reload may have changed it), else on a new one, which is then kept.
    async fn send(&self, path: &Path, mut request: Request<Body>) -> Result<Response<Incoming>, Refused> {
        let kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        // Idle again at once in practice; a connection that is not (within a bound) is
        // dropped, which closes it, and the request goes on a new one.
        if let Some((kept_path, mut sender)) = kept
            && kept_path == path
            && tokio::time::timeout(std::time::Duration::from_secs(1), sender.ready())
                .await
                .is_ok_and(|r| r.is_ok())
        {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep(path, sender);
                    return Ok(response);
                }
                // Closed by dockerd before the request went out: it goes on a new one.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(unreachable(path, error.error())),
                },
            }
        }
        let mut sender = connect(path, false).await?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(path, &e))?;
        self.keep(path, sender);
        Ok(response)
    }

    fn keep(&self, path: &Path, sender: SendRequest) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((path.to_owned(), sender));
    }
}

fn unreachable(upstream: &Path, e: &dyn std::fmt::Display) -> Refused {
    Refused::new(
        StatusCode::BAD_GATEWAY,
        "upstream",
        format!("enforcer: the gate cannot reach dockerd at {}: {e}", upstream.display()),
    )
}

/// A new connection to dockerd (driven by a task of its own until either side closes it).
async fn connect(upstream: &Path, upgrade: bool) -> Result<SendRequest, Refused> {
    let stream = UnixStream::connect(upstream).await.map_err(|e| unreachable(upstream, &e))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(upstream, &e))?;
    tokio::spawn(async move {
        let result = if upgrade { connection.with_upgrades().await } else { connection.await };
        if let Err(error) = result {
            log::debug!("gate: dockerd connection ended: {error}");
        }
    });
    Ok(sender)
}

/// Sends one request to dockerd on a connection of its own (upgrades, the owner look-ups).
async fn send(upstream: &Path, request: Request<Body>, upgrade: bool) -> Result<Response<Incoming>, Refused> {
    connect(upstream, upgrade).await?.send_request(request).await.map_err(|e| unreachable(upstream, &e))
}

/// Whether the gate judges requests of API `version` (`major.minor`, at least 1.24).
fn version_judged(version: &str) -> bool {
    let Some((major, minor)) = version.split_once('.') else { return false };
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(major), Ok(minor)) => (major, minor) >= (1, 24),
        _ => false,
    }
}

/// Whether a request has a body: a non-zero length, or chunking.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) != Some(0))
}

/// `Connection: upgrade` with an `Upgrade` header (attach's `tcp`, `BuildKit`'s `h2c`).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Headers that belong to one hop, not to the request; an upgrade keeps its own two.
fn is_hop_by_hop(name: &header::HeaderName, upgrade: bool) -> bool {
    let upgrade_header = *name == header::CONNECTION || *name == header::UPGRADE;
    (upgrade_header && !upgrade)
        || *name == header::TRANSFER_ENCODING
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// An image reference for a path: its `/` separate segments, as dockerd's `{name:.*}` takes them.
fn encode_image(name: &str) -> String {
    name.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// One path segment, percent-encoded for a URI.
fn encode_segment(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@' | b'+' | b'=') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Where each gated rule's socket lives.
pub fn socket_path(dir: &Path, rule: &str) -> PathBuf {
    dir.join(format!("{rule}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_that_parsers_could_disagree_on_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&headers).is_ok());
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(check_framing(&headers).unwrap_err().status, StatusCode::BAD_REQUEST);
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&headers).is_err());
        let mut headers = HeaderMap::new();
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        assert!(check_framing(&headers).is_err());
        let mut headers = HeaderMap::new();
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("Chunked"));
        assert!(check_framing(&headers).is_ok());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("gitea"), "gitea");
        assert_eq!(encode_segment("a b?#%/"), "a%20b%3F%23%25%2F");
    }

    #[test]
    fn only_versions_whose_bodies_the_gate_knows() {
        assert!(
            version_judged("1.24")
                && version_judged("1.41")
                && version_judged("1.51")
                && version_judged("2.0")
        );
        for old in ["1.23", "1.12", "1", "1.", ".24", "1.24.1", "1.x"] {
            assert!(!version_judged(old), "{old}");
        }
    }

    #[test]
    fn a_body_is_a_length_or_chunking() {
        let mut headers = HeaderMap::new();
        assert!(!has_body(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        assert!(has_body(&headers));
        let mut chunked = HeaderMap::new();
        chunked.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(has_body(&chunked));
    }

    #[test]
    fn prunes_are_narrowed_to_the_rules_own() {
        let plain = own_prune_filters("", "r").unwrap();
        assert_eq!(
            form_decode(plain.strip_prefix("filters=").unwrap()).unwrap(),
            r#"{"label":{"enforcer.owner=r":true}}"#
        );
        let until = own_prune_filters("filters=%7B%22until%22%3A%7B%2224h%22%3Atrue%7D%7D&x=1", "r").unwrap();
        let decoded = form_decode(
            until.split('&').find(|p| p.starts_with("filters=")).unwrap().strip_prefix("filters=").unwrap(),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&decoded).unwrap();
        assert_eq!(value["until"]["24h"], true);
        assert_eq!(value["label"]["enforcer.owner=r"], true);
        let list = own_prune_filters("filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D", "r").unwrap();
        let decoded = form_decode(list.strip_prefix("filters=").unwrap()).unwrap();
        assert_eq!(decoded, r#"{"label":["a=b","enforcer.owner=r"]}"#);
        assert!(own_prune_filters("filters=1&filters=2", "r").is_err());
        assert!(own_prune_filters("Filters=%7B%7D", "r").is_err());
        // Keys are decoded as dockerd decodes them: `filter%73` is `filters`, narrowed too,
        // and with a plain `filters` it is a duplicate.
        let spelt = own_prune_filters("filter%73=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&all=1", "r").unwrap();
        assert_eq!(spelt.split('&').filter(|p| p.starts_with("filters=")).count(), 1, "{spelt}");
        assert!(!spelt.contains("filter%73"), "{spelt}");
        let decoded = form_decode(
            spelt.split('&').find(|p| p.starts_with("filters=")).unwrap().strip_prefix("filters=").unwrap(),
        )
        .unwrap();
        assert_eq!(decoded, r#"{"label":["a=b","enforcer.owner=r"]}"#);
        assert!(own_prune_filters("filters=%7B%7D&filter%73=%7B%7D", "r").is_err());
        assert!(own_prune_filters("fil%74ers=%7B%7D&Filter%73=%7B%7D", "r").is_err());
        assert!(own_prune_filters("all=1;filters=%7B%7D", "r").is_err());
        assert!(own_prune_filters("filter%7=x", "r").is_err());
    }

    #[test]
    fn protect_refuses_by_name_and_label_whatever_the_owner() {
        let mut gate = RuleGate::for_tests_with_protect(vec![
            crate::policy::Protect::Name("gitea".into()),
            crate::policy::Protect::Label("tier".into(), Some("db".into())),
        ]);
        gate.name = "r".into();
        let facts = |name: &str, labels: &str| ContainerFacts {
            id: "a".repeat(64),
            name: name.into(),
            labels: serde_json::from_str(labels).unwrap(),
        };
        let refused = check_protect(
            &gate,
            Some("container inspect".into()),
            "container \"gitea\"",
            &facts("gitea", r#"{"enforcer.owner":"r"}"#),
        )
        .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.reason, "protect");
        assert!(refused.message.contains("docker container inspect"), "{}", refused.message);
        assert!(refused.message.contains("protect = [\"gitea\"]"), "{}", refused.message);
        assert!(check_protect(&gate, None, "x", &facts("db1", r#"{"tier":"db"}"#)).is_err());
        assert!(check_protect(&gate, None, "x", &facts("web", r#"{"tier":"web"}"#)).is_ok());
        assert_eq!(facts("w", r#"{"enforcer.owner":"r"}"#).owner(), Some("r"));
        assert_eq!(facts("w", "{}").owner(), None);
    }

    #[test]
    fn upgrades_need_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        assert!(!wants_upgrade(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(wants_upgrade(&headers));
    }

    /// A stand-in dockerd on a unix socket that counts its connections: `/close` answers
    /// with `Connection: close`, `/big` with 4 MiB.
    fn counting_upstream(path: &Path) -> Arc<std::sync::atomic::AtomicUsize> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let mut response = Response::new(full(if path == "/big" {
                        Bytes::from(vec![b'x'; 4 << 20])
                    } else {
                        Bytes::from(path.clone())
                    }));
                    if path == "/close" {
                        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        accepted
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).header(header::HOST, "docker").body(full(Bytes::new())).unwrap()
    }

    async fn body_of(response: Response<Incoming>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn one_client_connection_reuses_one_dockerd_connection() {
        use std::sync::atomic::Ordering;
        let dir = std::env::temp_dir().join(format!("enforcer-upstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
        let (count_a, count_b) = (counting_upstream(&a), counting_upstream(&b));
        let upstream = Upstream::default();
        for path in ["/one", "/two", "/three"] {
            assert_eq!(body_of(upstream.send(&a, get(path)).await.unwrap()).await, path);
        }
        assert_eq!(count_a.load(Ordering::SeqCst), 1, "three requests, one connection");
        // dockerd closes it: the next request goes on a new one.
        assert_eq!(body_of(upstream.send(&a, get("/close")).await.unwrap()).await, "/close");
        assert_eq!(body_of(upstream.send(&a, get("/after-close")).await.unwrap()).await, "/after-close");
        assert_eq!(count_a.load(Ordering::SeqCst), 2);
        // An answer the client did not read to its end: that connection is not reused.
        drop(upstream.send(&a, get("/big")).await.unwrap());
        assert_eq!(body_of(upstream.send(&a, get("/after-big")).await.unwrap()).await, "/after-big");
        assert_eq!(count_a.load(Ordering::SeqCst), 3);
        // Another socket (a reload changed the rule's): a connection to that one.
        assert_eq!(body_of(upstream.send(&b, get("/other")).await.unwrap()).await, "/other");
        assert_eq!((count_a.load(Ordering::SeqCst), count_b.load(Ordering::SeqCst)), (3, 1));
        // A separate client connection has its own; a one-off `send` (upgrades, owner
        // look-ups) never takes the kept one.
        let other = Upstream::default();
        assert_eq!(body_of(other.send(&b, get("/x")).await.unwrap()).await, "/x");
        assert_eq!(body_of(send(&b, get("/y"), false).await.unwrap()).await, "/y");
        assert_eq!(body_of(upstream.send(&b, get("/z")).await.unwrap()).await, "/z");
        assert_eq!(count_b.load(Ordering::SeqCst), 3);
        // dockerd gone: a 502 refusal, not a hang.
        let gone = upstream.send(&dir.join("missing.sock"), get("/")).await.unwrap_err();
        assert_eq!(gone.status, StatusCode::BAD_GATEWAY);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload that removes a rule retires its gate: a connection still open on it gets
    /// 503 for its next request, and nothing more reaches dockerd.
    #[tokio::test]
    async fn a_retired_gate_answers_503_on_open_connections() {
        use std::sync::atomic::Ordering;
        let dir = std::env::temp_dir().join(format!("enforcer-retired-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dockerd = dir.join("d.sock");
        let accepted = counting_upstream(&dockerd);
        let gate = RuleGate {
            upstream: dockerd.clone(),
            ..RuleGate::for_tests("gone", enforcer_common::abi::RuleConfig::default())
        };
        let shared = Arc::new(RwLock::new(Arc::new(gate)));
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let slot = (Arc::clone(&slots).try_acquire_owned().unwrap(), slots.try_acquire_owned().unwrap());
        let (client, server) = UnixStream::pair().unwrap();
        let peer = Peer { uid: 0, pid: 0, comm: String::new() };
        tokio::spawn(connection(server, Arc::clone(&shared), peer, Arc::new(slot)));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        let first = sender.send_request(get("/v1.41/_ping")).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(body_of(first).await, "/v1.41/_ping");
        shared.read().unwrap().retired.store(true, Ordering::SeqCst);
        let second = sender.send_request(get("/v1.41/_ping")).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body_of(second).await.contains("rule \\\"gone\\\" is no longer in the policy"));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the second request never reached dockerd");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

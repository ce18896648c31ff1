//! A Redfish BMC simulator: many BMCs in one process, each on its own listener, as a
//! rack of servers would have them.
//!
//! No emulator at hand keeps a firmware inventory that changes after an update
//! (sushy-tools' fake driver fails SimpleUpdate and serves no inventory; its libvirt
//! driver only bumps a BIOS version; DMTF's mockup server changes nothing), so this one
//! does, the way BMCs do it:
//! - a ComputerSystem with `PowerState`, `ComputerSystem.Reset` and a boot override that
//!   a `Once` setting gives up at the next boot;
//! - an UpdateService with a `FirmwareInventory` (one SoftwareInventory per component)
//!   and `UpdateService.SimpleUpdate`, answered 202 with a task monitor in `Location`;
//! - the task progresses with time (New, Running with `PercentComplete`, Completed or
//!   Exception). The BMC fetches the image from its `ImageURI`: an image it cannot
//!   fetch, or one for another component than the `Targets` named, fails the task;
//! - `@Redfish.OperationApplyTime: OnReset`: the new version is staged and shows in the
//!   inventory only after the next power cycle or restart; `Immediate` applies it when
//!   the task completes;
//! - a BMC that reboots mid-update answers 503 with `Retry-After` for a while, then the
//!   task completes.
//!
//! An image is a text file whose lines `component=ID` and `version=V` say what it holds
//! (real images carry this in their header).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// When a staged update takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ApplyTime {
    /// As the task completes.
    Immediate,
    /// At the next power cycle or restart of the system.
    #[default]
    OnReset,
}

impl ApplyTime {
    fn as_str(self) -> &'static str {
        match self {
            ApplyTime::Immediate => "Immediate",
            ApplyTime::OnReset => "OnReset",
        }
    }
}

/// One simulated BMC, as the configuration file describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcSpec {
    /// The system's name (`ComputerSystem.Name`), usually the host's.
    pub name: String,
    /// Where it listens; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_user")]
    pub username: String,
    #[serde(default = "default_user")]
    pub password: String,
    /// Component id to version (`{"BMC": "1.70", "BIOS": "2.1.0"}`).
    #[serde(default)]
    pub firmware: BTreeMap<String, String>,
    /// When an update applies unless the request says otherwise.
    #[serde(default)]
    pub apply_time: ApplyTime,
    /// How long an update task runs, with humantime units ("3s").
    #[serde(default = "default_task", with = "humantime_serde_lite")]
    pub task_duration: Duration,
    /// If set, the BMC reboots halfway through each update and answers 503 for this long.
    #[serde(default, with = "humantime_serde_lite::optional")]
    pub reboot_mid_update: Option<Duration>,
    /// Power state at start.
    #[serde(default = "default_on")]
    pub powered_on: bool,
    /// If set, every update's flash fails with this message (a bad flash part, a
    /// signature the BMC refuses): the task ends Exception, nothing changes.
    #[serde(default)]
    pub fail_update: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_user() -> String {
    "admin".into()
}
fn default_task() -> Duration {
    Duration::from_secs(3)
}
fn default_on() -> bool {
    true
}

mod humantime_serde_lite {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod optional {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// The simulator's configuration file: `{"bmcs": [BmcSpec, ...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub bmcs: Vec<BmcSpec>,
}

/// Why the simulator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("BMC '{name}' cannot listen on {addr}: {source}")]
    Listen {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// One running BMC: where it answers and what it holds now.
#[derive(Clone)]
pub struct RunningBmc {
    pub name: String,
    pub addr: SocketAddr,
    bmc: Arc<Bmc>,
}

impl RunningBmc {
    /// The base URL a Redfish client is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The versions the inventory shows now.
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.bmc.lock().versions.clone()
    }

    /// Whether the system is powered on.
    pub fn powered_on(&self) -> bool {
        self.bmc.lock().on
    }

    /// Power cycles seen (each off-to-on transition or restart).
    pub fn boots(&self) -> u32 {
        self.bmc.lock().boots
    }
}

/// Starts every BMC of `config` and serves them until the runtime ends.
pub async fn start(config: SimConfig) -> Result<Vec<RunningBmc>, SimError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client without TLS roots builds");
    let mut out = Vec::new();
    for spec in config.bmcs {
        let listener = tokio::net::TcpListener::bind(spec.listen)
            .await
            .map_err(|source| SimError::Listen {
                name: spec.name.clone(),
                addr: spec.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            name: spec.name.clone(),
            addr: spec.listen,
            source,
        })?;
        let bmc = Arc::new(Bmc::new(spec, http.clone()));
        out.push(RunningBmc {
            name: bmc.spec.name.clone(),
            addr,
            bmc: bmc.clone(),
        });
        let app = router(bmc);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("BMC at {addr}: {e}");
            }
        });
    }
    Ok(out)
}

const SYSTEM: &str = "/redfish/v1/Systems/1";
const INVENTORY: &str = "/redfish/v1/UpdateService/FirmwareInventory";
const RESET_TYPES: &[&str] = &[
    "On",
    "ForceOff",
    "GracefulShutdown",
    "ForceRestart",
    "GracefulRestart",
    "PowerCycle",
];
const BOOT_TARGETS: &[&str] = &["None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiHttp"];

struct Bmc {
    spec: BmcSpec,
    http: reqwest::Client,
    state: Mutex<Inner>,
}

struct Inner {
    on: bool,
    boots: u32,
    boot_target: String,
    boot_enabled: String,
    boot_mode: String,
    versions: BTreeMap<String, String>,
    /// Staged updates waiting for a reset: component to version.
    staged: BTreeMap<String, String>,
    tasks: Vec<Task>,
    /// The BMC is rebooting until then and answers 503.
    down_until: Option<Instant>,
}

struct Task {
    id: usize,
    began: Instant,
    began_wall: SystemTime,
    ended_wall: Option<SystemTime>,
    apply: ApplyTime,
    image: String,
    /// What fetching and checking the image found: component and version, or why not.
    image_check: Option<Result<(String, String), String>>,
    state: &'static str,
    status: &'static str,
    messages: Vec<(String, String)>,
    rebooted: bool,
}

impl Bmc {
    fn new(spec: BmcSpec, http: reqwest::Client) -> Bmc {
        let inner = Inner {
            on: spec.powered_on,
            boots: 0,
            boot_target: "None".into(),
            boot_enabled: "Disabled".into(),
            boot_mode: "UEFI".into(),
            versions: spec.firmware.clone(),
            staged: BTreeMap::new(),
            tasks: Vec::new(),
            down_until: None,
        };
        Bmc {
            spec,
            http,
            state: Mutex::new(inner),
        }
    }

    /// The service's UUID: stable for a name, as a BMC's is across requests and restarts.
    fn uuid(&self) -> String {
        // FNV-1a over the name: 64 bits are plenty to tell a rack's BMCs apart.
        let h = self
            .spec
            .name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 4) & 0xfff,
            h & 0xffff_ffff_ffff
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves every task forward to `now`: the clock is the only thing that drives them.
    fn advance(&self, g: &mut Inner, now: Instant) {
        let total = self.spec.task_duration;
        let mut reboot = None;
        for t in g.tasks.iter_mut() {
            if t.ended_wall.is_some() {
                continue;
            }
            let elapsed = now.duration_since(t.began);
            if let Some(down) = self.spec.reboot_mid_update
                && !t.rebooted
                && elapsed >= total / 2
            {
                t.rebooted = true;
                reboot = Some(t.began + total / 2 + down);
            }
            let ends = t.began + total + self.spec.reboot_mid_update.unwrap_or_default();
            // It ends once its time is up and the BMC has fetched and checked the image.
            let checked = t.image_check.clone().filter(|_| now >= ends);
            let Some(check) = checked else {
                t.state = if elapsed < total / 10 {
                    "New"
                } else {
                    "Running"
                };
                continue;
            };
            t.ended_wall = Some(t.began_wall + ends.duration_since(t.began));
            let check = match (check, &self.spec.fail_update) {
                (Ok(_), Some(why)) => Err(why.clone()),
                (check, _) => check,
            };
            match check {
                Ok((component, version)) => {
                    t.state = "Completed";
                    t.status = "OK";
                    match t.apply {
                        ApplyTime::Immediate => {
                            g.versions.insert(component.clone(), version.clone());
                            t.messages.push((
                                "Update.1.0.UpdateSuccessful".into(),
                                format!(
                                    "Device '{component}' successfully updated with image '{}'.",
                                    t.image
                                ),
                            ));
                        }
                        ApplyTime::OnReset => {
                            g.staged.insert(component.clone(), version.clone());
                            t.messages.push((
                                "Update.1.0.AwaitToActivate".into(),
                                format!("Awaiting for an action to proceed with activating image '{}' on '{component}'.", t.image),
                            ));
                        }
                    }
                }
                Err(why) => {
                    t.state = "Exception";
                    t.status = "Critical";
                    t.messages.push(("Update.1.0.UpdateFailed".into(), why));
                }
            }
        }
        if let Some(until) = reboot {
            g.down_until = Some(until);
        }
    }

    /// Power comes on (or the system restarts): staged firmware takes effect, a `Once`
    /// boot override is used up.
    fn boot(g: &mut Inner) {
        g.on = true;
        g.boots += 1;
        let staged = std::mem::take(&mut g.staged);
        g.versions.extend(staged);
        if g.boot_enabled == "Once" {
            g.boot_enabled = "Disabled".into();
            g.boot_target = "None".into();
        }
    }
}

fn router(bmc: Arc<Bmc>) -> Router {
    let authed = Router::new()
        .route("/redfish/v1/Systems", get(systems))
        .route(SYSTEM, get(system).patch(patch_system))
        .route(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/UpdateService", get(update_service))
        .route(INVENTORY, get(inventory))
        .route(
            "/redfish/v1/UpdateService/FirmwareInventory/{id}",
            get(inventory_item),
        )
        .route(
            "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
            post(simple_update),
        )
        .route("/redfish/v1/TaskService", get(task_service))
        .route("/redfish/v1/TaskService/Tasks", get(tasks))
        .route("/redfish/v1/TaskService/Tasks/{id}", get(task))
        .route(
            "/redfish/v1/TaskService/TaskMonitors/{id}",
            get(task_monitor),
        )
        .layer(middleware::from_fn_with_state(bmc.clone(), basic_auth));
    Router::new()
        .route("/redfish/v1", get(service_root))
        .route("/redfish/v1/", get(service_root))
        .merge(authed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(bmc.clone(), rebooting))
        .with_state(bmc)
}

/// A Redfish error body, as `Base.1.x` messages come.
fn error(status: StatusCode, id: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        axum::Json(json!({"error": {
            "code": format!("Base.1.15.{id}"),
            "message": message,
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": format!("Base.1.15.{id}"),
                "Message": message,
                "Severity": "Critical",
                "Resolution": "Correct the request and resubmit it.",
            }],
        }})),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceMissingAtURI",
        format!(
            "The resource at the URI '{}' was not found.",
            req.uri().path()
        ),
    )
}

async fn rebooting(State(bmc): State<Arc<Bmc>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let down = {
        let mut g = bmc.lock();
        bmc.advance(&mut g, now);
        match g.down_until {
            Some(until) if now < until => Some(until - now),
            Some(_) => {
                g.down_until = None;
                None
            }
            None => None,
        }
    };
    if let Some(left) = down {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceTemporarilyUnavailable",
            "The service is temporarily unavailable: the BMC is restarting.",
        );
        let secs = left.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    next.run(req).await
}

async fn basic_auth(
    State(bmc): State<Arc<Bmc>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let want = format!("{}:{}", bmc.spec.username, bmc.spec.password);
    if given.as_deref() != Some(want.as_str()) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "InsufficientPrivilege",
            "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Redfish\""),
        );
        return r;
    }
    next.run(req).await
}

async fn service_root(State(bmc): State<Arc<Bmc>>) -> Response {
    axum::Json(json!({
        "@odata.id": "/redfish/v1",
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Root Service",
        "RedfishVersion": "1.15.0",
        "UUID": bmc.uuid(),
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "UpdateService": {"@odata.id": "/redfish/v1/UpdateService"},
        "TaskService": {"@odata.id": "/redfish/v1/TaskService"},
    }))
    .into_response()
}

async fn systems() -> Response {
    axum::Json(json!({
        "@odata.id": "/redfish/v1/Systems",
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "Name": "Computer System Collection",
        "Members@odata.count": 1,
        "Members": [{"@odata.id": SYSTEM}],
    }))
    .into_response()
}

async fn system(State(bmc): State<Arc<Bmc>>) -> Response {
    let g = bmc.lock();
    axum::Json(json!({
        "@odata.id": SYSTEM,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": "1",
        "Name": bmc.spec.name,
        "SystemType": "Physical",
        "PowerState": if g.on { "On" } else { "Off" },
        "Status": {"State": "Enabled", "Health": "OK"},
        "Boot": {
            "BootSourceOverrideTarget": g.boot_target,
            "BootSourceOverrideEnabled": g.boot_enabled,
            "BootSourceOverrideMode": g.boot_mode,
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
        },
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": RESET_TYPES,
        }},
    }))
    .into_response()
}

/// A request's JSON body, or the error a BMC answers for one that is not JSON.
fn json_body(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            format!("The request body submitted was malformed JSON: {e}"),
        ))
    })
}

async fn patch_system(State(bmc): State<Arc<Bmc>>, body: axum::body::Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(boot) = body.get("Boot").and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyMissing",
            "The property Boot is a required property and must be included in the request.",
        );
    };
    let allowed: [(&str, &[&str]); 3] = [
        ("BootSourceOverrideTarget", BOOT_TARGETS),
        (
            "BootSourceOverrideEnabled",
            &["Disabled", "Once", "Continuous"],
        ),
        ("BootSourceOverrideMode", &["UEFI", "Legacy"]),
    ];
    for (k, v) in boot {
        let Some((_, values)) = allowed.iter().find(|(name, _)| name == k) else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyUnknown",
                format!(
                    "The property {k} is not in the list of valid properties for the resource."
                ),
            );
        };
        if !v.as_str().is_some_and(|s| values.contains(&s)) {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueNotInList",
                format!(
                    "The value {v} for the property {k} is not in the list of acceptable values."
                ),
            );
        }
    }
    let mut g = bmc.lock();
    let text = |k: &str| boot.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(t) = text("BootSourceOverrideTarget") {
        g.boot_target = t;
    }
    if let Some(e) = text("BootSourceOverrideEnabled") {
        g.boot_enabled = e;
    }
    if let Some(m) = text("BootSourceOverrideMode") {
        g.boot_mode = m;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(bmc): State<Arc<Bmc>>, body: axum::body::Bytes) -> Response {
    let kind = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("ResetType")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let Some(kind) = kind else {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterMissing",
            "The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.",
        );
    };
    let mut g = bmc.lock();
    match kind.as_str() {
        "On" if !g.on => Bmc::boot(&mut g),
        "On" => {}
        "ForceOff" | "GracefulShutdown" => g.on = false,
        "ForceRestart" | "GracefulRestart" | "PowerCycle" => Bmc::boot(&mut g),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueNotInList",
                format!(
                    "The value '{other}' for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values."
                ),
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn update_service(State(bmc): State<Arc<Bmc>>) -> Response {
    axum::Json(json!({
        "@odata.id": "/redfish/v1/UpdateService",
        "@odata.type": "#UpdateService.v1_11_0.UpdateService",
        "Id": "UpdateService",
        "Name": "Update Service",
        "ServiceEnabled": true,
        "FirmwareInventory": {"@odata.id": INVENTORY},
        "Actions": {"#UpdateService.SimpleUpdate": {
            "target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
            "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
            "@Redfish.OperationApplyTimeSupport": {
                "@odata.type": "#Settings.v1_3_5.OperationApplyTimeSupport",
                "SupportedValues": ["Immediate", "OnReset"],
            },
        }},
        "HttpPushUriOptions": {"HttpPushUriApplyTime": {"ApplyTime": bmc.spec.apply_time.as_str()}},
    }))
    .into_response()
}

async fn inventory(State(bmc): State<Arc<Bmc>>) -> Response {
    let g = bmc.lock();
    let members = g.versions.keys().map(|id| format!("{INVENTORY}/{id}"));
    collection(
        INVENTORY,
        "#SoftwareInventoryCollection.SoftwareInventoryCollection",
        "Firmware Inventory Collection",
        members,
    )
}

/// A Redfish resource collection of `members` (their `@odata.id`s).
fn collection(
    id: &str,
    odata_type: &str,
    name: &str,
    members: impl Iterator<Item = String>,
) -> Response {
    let members: Vec<Value> = members.map(|m| json!({"@odata.id": m})).collect();
    axum::Json(json!({
        "@odata.id": id,
        "@odata.type": odata_type,
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members,
    }))
    .into_response()
}

async fn inventory_item(State(bmc): State<Arc<Bmc>>, Path(id): Path<String>) -> Response {
    let g = bmc.lock();
    let Some(version) = g.versions.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            format!("The resource at the URI '{INVENTORY}/{id}' was not found."),
        );
    };
    axum::Json(json!({
        "@odata.id": format!("{INVENTORY}/{id}"),
        "@odata.type": "#SoftwareInventory.v1_10_0.SoftwareInventory",
        "Id": id,
        "Name": format!("{id} Firmware"),
        "Version": version,
        "Updateable": true,
        "Status": {"State": "Enabled", "Health": "OK"},
    }))
    .into_response()
}

async fn simple_update(State(bmc): State<Arc<Bmc>>, body: axum::body::Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(image) = body
        .get("ImageURI")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterMissing",
            "The action UpdateService.SimpleUpdate requires the parameter ImageURI to be present in the request body.",
        );
    };
    let apply = match body
        .get("@Redfish.OperationApplyTime")
        .and_then(Value::as_str)
    {
        None => bmc.spec.apply_time,
        Some("Immediate") => ApplyTime::Immediate,
        Some("OnReset") => ApplyTime::OnReset,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueNotInList",
                format!(
                    "The value '{other}' for the parameter @Redfish.OperationApplyTime is not in the list of acceptable values."
                ),
            );
        }
    };
    let targets: Vec<String> = body
        .get("Targets")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    let id = {
        let mut g = bmc.lock();
        if let Some(busy) = g.tasks.iter().find(|t| t.ended_wall.is_none()) {
            return error(
                StatusCode::CONFLICT,
                "ResourceInUse",
                format!(
                    "The change to the requested resource failed because the resource is in use or in transition: task {} is updating.",
                    busy.id
                ),
            );
        }
        let id = g.tasks.len() + 1;
        g.tasks.push(Task {
            id,
            began: Instant::now(),
            began_wall: SystemTime::now(),
            ended_wall: None,
            apply,
            image: image.clone(),
            image_check: None,
            state: "New",
            status: "OK",
            messages: vec![(
                "TaskEvent.1.0.TaskStarted".into(),
                format!("The task with Id '{id}' has started."),
            )],
            rebooted: false,
        });
        id
    };
    // The BMC fetches the image as the task starts, as real ones do.
    let fetcher = bmc.clone();
    tokio::spawn(async move {
        let versions = fetcher.lock().versions.clone();
        let check = fetch_image(&fetcher.http, &image, &targets, &versions).await;
        let mut g = fetcher.lock();
        if let Some(t) = g.tasks.iter_mut().find(|t| t.id == id) {
            t.image_check = Some(check);
        }
    });
    let g = bmc.lock();
    let t = g.tasks.iter().find(|t| t.id == id).expect("just added");
    let mut r = (StatusCode::ACCEPTED, axum::Json(task_body(t))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/redfish/v1/TaskService/TaskMonitors/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Fetches an image and reads what it holds; the task's failure text when it cannot.
async fn fetch_image(
    http: &reqwest::Client,
    uri: &str,
    targets: &[String],
    versions: &BTreeMap<String, String>,
) -> Result<(String, String), String> {
    let transfer = |why: String| format!("Transfer of image '{uri}' failed: {why}.");
    let resp = http
        .get(uri)
        .send()
        .await
        .map_err(|e| transfer(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(transfer(format!("HTTP {}", resp.status())));
    }
    let text = resp.text().await.map_err(|e| transfer(e.to_string()))?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
    };
    let (Some(component), Some(version)) = (field("component"), field("version")) else {
        return Err(format!(
            "The image '{uri}' is not a valid firmware package."
        ));
    };
    if !versions.contains_key(&component) {
        return Err(format!(
            "The image '{uri}' is for component '{component}', which this system does not have."
        ));
    }
    if !targets.is_empty() && !targets.contains(&component) {
        return Err(format!(
            "The image '{uri}' is for component '{component}', not for the targets {}.",
            targets.join(", ")
        ));
    }
    Ok((component, version))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn task_body(t: &Task) -> Value {
    let percent = match (t.state, t.ended_wall) {
        (_, Some(_)) => 100,
        ("New", _) => 0,
        _ => 50,
    };
    let mut body = json!({
        "@odata.id": format!("/redfish/v1/TaskService/Tasks/{}", t.id),
        "@odata.type": "#Task.v1_7_0.Task",
        "Id": t.id.to_string(),
        "Name": format!("Firmware update {}", t.id),
        "TaskState": t.state,
        "TaskStatus": t.status,
        "PercentComplete": percent,
        "StartTime": rfc3339(t.began_wall),
        "TaskMonitor": format!("/redfish/v1/TaskService/TaskMonitors/{}", t.id),
        "Payload": {"TargetUri": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", "HttpOperation": "POST"},
        "Messages": t.messages.iter().map(|(id, m)| json!({"MessageId": id, "Message": m})).collect::<Vec<_>>(),
    });
    if let Some(end) = t.ended_wall {
        body["EndTime"] = json!(rfc3339(end));
    }
    body
}

fn find_task(bmc: &Bmc, id: &str, f: impl FnOnce(&Task) -> Response) -> Response {
    let g = bmc.lock();
    match g.tasks.iter().find(|t| t.id.to_string() == id) {
        Some(t) => f(t),
        None => error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            format!("The resource at the URI '/redfish/v1/TaskService/Tasks/{id}' was not found."),
        ),
    }
}

async fn task_service() -> Response {
    axum::Json(json!({
        "@odata.id": "/redfish/v1/TaskService",
        "@odata.type": "#TaskService.v1_2_0.TaskService",
        "Id": "TaskService",
        "Name": "Task Service",
        "ServiceEnabled": true,
        "Tasks": {"@odata.id": "/redfish/v1/TaskService/Tasks"},
    }))
    .into_response()
}

async fn tasks(State(bmc): State<Arc<Bmc>>) -> Response {
    let g = bmc.lock();
    let members = g
        .tasks
        .iter()
        .map(|t| format!("/redfish/v1/TaskService/Tasks/{}", t.id));
    collection(
        "/redfish/v1/TaskService/Tasks",
        "#TaskCollection.TaskCollection",
        "Task Collection",
        members,
    )
}

async fn task(State(bmc): State<Arc<Bmc>>, Path(id): Path<String>) -> Response {
    find_task(&bmc, &id, |t| axum::Json(task_body(t)).into_response())
}

/// A task monitor answers 202 while the task runs, then the task itself.
async fn task_monitor(State(bmc): State<Arc<Bmc>>, Path(id): Path<String>) -> Response {
    find_task(&bmc, &id, |t| {
        let status = if t.ended_wall.is_some() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        (status, axum::Json(task_body(t))).into_response()
    })
}

//! A minimal AWS Lambda Runtime API (2018-06-01) for one function binary.
//!
//! Why it exists: `cargo lambda watch` (1.9.x) answers
//! `GET …/runtime/invocation/next` with the constant header
//! `lambda-runtime-deadline-ms: 600000`, a *duration*, where Lambda sends an
//! absolute UNIX time in milliseconds. `lambda_runtime` turns it into
//! 1970-01-01T00:10:00Z, so `scheduled-charge` believes its deadline has
//! passed and stops before charging anything. Until the function tolerates
//! that, the demo can run the same built `scheduled-charge` binary against
//! this runtime API, which sends a real deadline (now + the function timeout).
//! Everything else (the binary, the event payload, the response) is as under
//! `cargo lambda watch`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Error, Result, fail};

/// What the function answered for one invocation.
pub enum Answer {
    Ok(Vec<u8>),
    /// `…/error`: the function's error document.
    Err(Vec<u8>),
}

struct Invocation {
    id: String,
    payload: Vec<u8>,
    answer: oneshot::Sender<Answer>,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<Mutex<mpsc::Receiver<Invocation>>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
    init_error: Arc<Mutex<Option<String>>>,
    timeout: Duration,
    function: String,
}

pub struct RuntimeShim {
    tx: mpsc::Sender<Invocation>,
    shared: Shared,
    child: Mutex<tokio::process::Child>,
    server: tokio::task::JoinHandle<()>,
    next_id: std::sync::atomic::AtomicU64,
    pub log: PathBuf,
}

impl RuntimeShim {
    /// Serves the runtime API on 127.0.0.1:0 and starts `binary` against it
    /// with `env` (the functions' environment) plus the `AWS_LAMBDA_*`
    /// variables Lambda sets. Output goes to `log`.
    pub async fn start(
        function: &str,
        binary: &Path,
        env: &[(String, String)],
        timeout: Duration,
        log: &Path,
    ) -> Result<Self> {
        if !binary.is_file() {
            return Err(fail(format!(
                "{} does not exist (build it with `cargo build -p {function}`)",
                binary.display()
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let shared = Shared {
            queue: Arc::new(Mutex::new(rx)),
            pending: Arc::new(Mutex::new(HashMap::new())),
            init_error: Arc::new(Mutex::new(None)),
            timeout,
            function: function.to_owned(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("start {}: {e}", binary.display())))?;
        Ok(Self {
            tx,
            shared,
            child: Mutex::new(child),
            server,
            next_id: std::sync::atomic::AtomicU64::new(1),
            log: log.to_owned(),
        })
    }

    /// Invokes the function once (RequestResponse) and waits for its answer.
    pub async fn invoke(&self, payload: Vec<u8>) -> Result<Answer> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (answer, rx) = oneshot::channel();
        self.tx
            .send(Invocation {
                id: format!("local-demo-{n:06}"),
                payload,
                answer,
            })
            .await
            .map_err(|_| fail("runtime shim stopped"))?;
        let mut rx = rx;
        let limit = tokio::time::Instant::now() + self.shared.timeout + Duration::from_secs(30);
        loop {
            tokio::select! {
                got = &mut rx => return got.map_err(|_| fail("the function dropped the invocation")),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if let Some(e) = self.shared.init_error.lock().await.clone() {
                        return Err(fail(format!("{} failed to initialise: {e} (see {})", self.shared.function, self.log.display())));
                    }
                    if let Ok(Some(status)) = self.child.lock().await.try_wait() {
                        return Err(fail(format!("{} exited ({status}); see {}", self.shared.function, self.log.display())));
                    }
                    if tokio::time::Instant::now() > limit {
                        return Err(fail(format!("{} did not answer in time", self.shared.function)));
                    }
                }
            }
        }
    }

    pub async fn stop(self) {
        let _ = self.child.lock().await.kill().await;
        self.server.abort();
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn next(State(s): State<Shared>) -> Response {
    let Some(inv) = s.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    s.pending.lock().await.insert(inv.id.clone(), inv.answer);
    let mut headers = HeaderMap::new();
    let deadline = now_ms() + s.timeout.as_millis();
    let pairs = [
        ("lambda-runtime-aws-request-id", inv.id.clone()),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            format!(
                "arn:aws:lambda:ap-northeast-2:000000000000:function:{}",
                s.function
            ),
        ),
        (
            "lambda-runtime-trace-id",
            format!("Root=1-00000000-{:024x};Sampled=0", now_ms()),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    (StatusCode::OK, headers, inv.payload).into_response()
}

async fn respond(s: &Shared, id: &str, answer: Answer) -> StatusCode {
    match s.pending.lock().await.remove(id) {
        Some(tx) => {
            let _ = tx.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    respond(&s, &id, Answer::Ok(body.to_vec())).await
}

async fn error(State(s): State<Shared>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    respond(&s, &id, Answer::Err(body.to_vec())).await
}

async fn init_error(State(s): State<Shared>, body: Bytes) -> StatusCode {
    *s.init_error.lock().await = Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

/// Reads a `KEY=VALUE` file (blank lines and `#` comments skipped).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

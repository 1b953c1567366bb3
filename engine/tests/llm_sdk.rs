//! The official `openai` and `anthropic` Python SDKs (from PyPI, versions pinned in
//! `tests/sdk/requirements.txt`) against the LLM gateway: the real engine on loopback in front
//! of in-process mock providers (`headwater_engine::llm_mock`), one per egress format, and the
//! checks of `tests/sdk/sdk_checks.py` run with the SDKs' own clients, parsers, stream
//! reassembly and error classes.
//!
//! The SDKs live in a virtualenv made by `bash tests/sdk/setup.sh` (at `target/sdk-venv`); set
//! `HEADWATER_SDK_PYTHON` to use another interpreter that has them. Without them this test
//! fails (it is never skipped) and says what to run.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use headwater_engine::llm_mock::{Behavior, Endpoint};

/// The virtual key the script authenticates with.
const KEY: &str = "sk-headwater-sdk-test";
/// The longest the script may run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the engine crate sits in the workspace")
        .to_path_buf()
}

fn deployment(provider: &str, model: &str, base: &str) -> String {
    format!(
        "[[llm.model.deployment]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\nbase_url = \"{base}\"\napi_key = \"sk-upstream-{provider}\"\n"
    )
}

fn model(name: &str, extra: &str, deployment: &str) -> String {
    format!("[[llm.model]]\nname = \"{name}\"\n{extra}{deployment}\n")
}

/// The pinned `name==version` of `package` in `tests/sdk/requirements.txt`.
fn pinned(requirements: &str, package: &str) -> Option<String> {
    requirements.lines().find_map(|l| {
        let (name, version) = l.split_once("==")?;
        (name.trim().eq_ignore_ascii_case(package)).then(|| version.trim().to_owned())
    })
}

/// The interpreter with the SDKs; panics with what to do when it is missing or stale.
fn python(root: &Path) -> PathBuf {
    let setup = "bash tests/sdk/setup.sh";
    let (python, is_default) = match std::env::var_os("HEADWATER_SDK_PYTHON") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), false),
        _ => (root.join("target/sdk-venv/bin/python"), true),
    };
    assert!(
        !is_default || python.exists(),
        "\n\nThe Python SDK virtualenv is missing: {} does not exist.\n\
         Run `{setup}` from the repository root (it creates target/sdk-venv with the openai and \
         anthropic SDKs pinned in tests/sdk/requirements.txt; needs python3 and PyPI), \
         or set HEADWATER_SDK_PYTHON to an interpreter that has them.\n",
        python.display()
    );
    let out = Command::new(&python)
        .args([
            "-c",
            "import openai, anthropic; print(openai.__version__, anthropic.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "\n\nCannot run {}: {e}.\nRun `{setup}` (or fix HEADWATER_SDK_PYTHON).\n",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "\n\n{} cannot import the openai and anthropic SDKs:\n{}\nRun `{setup}`.\n",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let requirements = std::fs::read_to_string(root.join("tests/sdk/requirements.txt"))
        .expect("tests/sdk/requirements.txt");
    let wanted = format!(
        "{} {}",
        pinned(&requirements, "openai").expect("openai pinned"),
        pinned(&requirements, "anthropic").expect("anthropic pinned")
    );
    if is_default {
        assert_eq!(
            found, wanted,
            "\n\nThe SDK virtualenv is stale (openai, anthropic versions found vs pinned in \
             tests/sdk/requirements.txt). Run `{setup}`.\n"
        );
    } else if found != wanted {
        println!("note: HEADWATER_SDK_PYTHON has openai, anthropic {found}; pinned: {wanted}");
    }
    python
}

/// Reads a child's pipe to the end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child` up to `deadline`; kills it past that. `None`: killed.
fn wait(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            return Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn official_python_sdks_against_the_gateway() {
    let root = root();
    let python = python(&root);

    // One mock per egress format, so each one's traffic can be checked; `down` answers 503 to
    // everything (the first deployment of the fallback chain).
    let openai = common::start_mock();
    let anthropic = common::start_mock();
    let gemini = common::start_mock();
    let down = common::start_mock();
    down.set(Behavior::Status {
        code: 503,
        retry_after: None,
    });
    let oa = format!("http://{}/v1", openai.addr());
    let an = format!("http://{}/v1", anthropic.addr());
    let ge = format!("http://{}/v1beta", gemini.addr());
    let dn = format!("http://{}/v1", down.addr());

    // Per egress format: the alias, the provider, the upstream model and the mock.
    let egress = [
        ("gpt", "openai", "gpt-4o-mini", &oa),
        ("claude", "anthropic", "claude-x", &an),
        ("gem", "gemini", "gemini-2.0-flash", &ge),
    ];
    let mut llm: Vec<String> = egress
        .iter()
        .map(|(alias, provider, upstream, base)| {
            model(alias, "", &deployment(provider, upstream, base))
        })
        .collect();
    llm.push(model(
        "embed",
        "",
        &deployment("openai", "text-embedding-3-small", &oa),
    ));
    llm.push(model(
        "fb",
        "fallbacks = [\"claude\"]\n",
        &deployment("openai", "always-503", &dn),
    ));
    // The fault checks (magic words: 429s, 400s, broken streams) go to their own aliases
    // (`faulty-gpt`, `limited-claude`, ...), so the health and rate-limit state they leave does
    // not touch the others.
    for kind in ["faulty", "limited"] {
        llm.extend(egress.iter().map(|(alias, provider, _, base)| {
            model(
                &format!("{kind}-{alias}"),
                "",
                &deployment(provider, kind, base),
            )
        }));
    }
    let llm = llm.concat();
    let gw = common::start_llm(&format!(
        "[[llm.key]]\nname = \"sdk\"\nkey = \"{KEY}\"\n\n{llm}"
    ));
    let base = format!("http://{}", gw.listen_addrs()[0]);

    let script = root.join("tests/sdk/sdk_checks.py");
    println!(
        "running {} {} against {base}",
        python.display(),
        script.display()
    );
    let mut child = Command::new(&python)
        .arg(&script)
        .current_dir(&root)
        .env("HEADWATER_SDK_BASE_URL", &base)
        .env("HEADWATER_SDK_KEY", KEY)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Loopback only, whatever the environment says.
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait(&mut child, SCRIPT_DEADLINE);
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("--- stderr ---\n{stderr}");
    }
    let status = status.unwrap_or_else(|| {
        panic!("the SDK checks did not finish within {SCRIPT_DEADLINE:?} (killed)")
    });
    assert!(
        status.success(),
        "the SDK checks failed ({status}); their output is above"
    );

    // Each egress saw its own format, with the upstream model names and provider keys.
    for (m, name) in [
        (&openai, "openai"),
        (&anthropic, "anthropic"),
        (&gemini, "gemini"),
    ] {
        let served: Vec<_> = m
            .served_all()
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(e, _)| e)
            .collect();
        let expected: &[Endpoint] = match name {
            "openai" => &[Endpoint::ChatCompletions, Endpoint::Embeddings],
            "anthropic" => &[Endpoint::Messages],
            _ => &[Endpoint::GenerateContent, Endpoint::StreamGenerateContent],
        };
        assert_eq!(served, expected, "{name} mock served {served:?}");
    }
    let sent = openai.requests();
    assert!(sent
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer sk-upstream-openai")));
    assert!(sent
        .iter()
        .any(|r| r.json()["model"] == "gpt-4o-mini" && r.json()["stream"] == true));
    let sent = anthropic.requests();
    assert!(sent
        .iter()
        .all(|r| r.header("x-api-key") == Some("sk-upstream-anthropic")));
    assert!(sent.iter().any(|r| r.json()["model"] == "claude-x"));
    assert!(gemini.requests().iter().any(|r| r
        .path
        .contains("/v1beta/models/gemini-2.0-flash:streamGenerateContent")));
    // The fallback chain tried its failing first deployment before falling back.
    assert!(down.served(Endpoint::ChatCompletions) >= 1);

    gw.shutdown();
    for m in [openai, anthropic, gemini, down] {
        m.stop();
    }
}

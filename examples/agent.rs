//! A minimal Rust agent: resolves one key over the daemon's socket with its credential and
//! uses it without printing it.
//!
//! `SCOPEHOLD_TOKEN=shk_... cargo run --example agent -- openai/prod demo`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (secret, project) = (
        args.next().ok_or("usage: agent SECRET PROJECT")?,
        args.next().ok_or("usage: agent SECRET PROJECT")?,
    );
    let socket = std::env::var_os("SCOPEHOLD_SOCKET")
        .map(std::path::PathBuf::from)
        .ok_or("set SCOPEHOLD_SOCKET to the daemon's socket")?;
    let token = std::env::var("SCOPEHOLD_TOKEN")?;
    let body = serde_json::json!({"secret": secret, "project": project});
    let a = scopehold::client::request(&socket, "POST", "/v1/resolve", Some(&body), Some(&token))?;
    if a.status != 200 {
        return Err(format!(
            "{} {}: {}",
            a.status,
            a.error_code().unwrap_or(""),
            a.error_message()
        )
        .into());
    }
    let value = zeroize::Zeroizing::new(a.body["value"].as_str().unwrap_or_default().to_string());
    // Use the key (here: only its length; an agent would put it in an Authorization header).
    println!(
        "resolved {secret} version {} ({} bytes), audit event {}",
        a.body["version"],
        value.len(),
        a.body["event"]
    );
    Ok(())
}

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
    let token = zeroize::Zeroizing::new(std::env::var("SCOPEHOLD_TOKEN")?);
    // The typed endpoint: method, path, request and answer from the API's one table.
    use scopehold::api::{endpoint, wire};
    let req = wire::ResolveRequest {
        secret: secret.parse()?,
        project: project.parse()?,
        version: None,
    };
    let a = scopehold::cli::client::call::<endpoint::Resolve>(&socket, &req, Some(&token))?;
    // Use the key (here: only its length; an agent would put it in an Authorization header).
    // The value stays in a zeroizing buffer and is never printed.
    println!(
        "resolved {secret} version {} ({} bytes), audit event {}",
        a.version,
        a.value.expose().len(),
        a.event
    );
    Ok(())
}

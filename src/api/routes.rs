//! The one route table: method, path, and who may call. The server looks a request up here
//! before anything else (an unknown path is 404 and a known path with another method is
//! 405, before authentication); the client and the CLI take paths and methods from here.

use super::error::ApiError;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reads; no body.
    Get,
    /// Changes and resolution; a JSON body.
    Post,
}

impl Method {
    /// As written on the request line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the socket, unauthenticated (health).
    Anyone,
    /// Any authenticated caller: an agent by credential, or a member by uid.
    Identity,
    /// Admin members only (by their uid).
    Admin,
    /// A host enrolling, with its join token: served on the hub's TLS listener only, to a
    /// connection with no client certificate.
    Enrolling,
}

/// Every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // Each is named for its path; see ROUTES.
pub enum Route {
    Health,
    Resolve,
    Whoami,
    Status,
    ProjectList,
    ProjectCreate,
    SecretList,
    SecretPut,
    SecretRotate,
    SecretRevoke,
    SecretDelete,
    AgentList,
    AgentCreate,
    AgentRevoke,
    AgentReissue,
    MemberList,
    MemberAdd,
    MemberRemove,
    MemberAdmin,
    SecretAssign,
    SecretUnassign,
    ResolveAll,
    GrantList,
    GrantCreate,
    GrantRevoke,
    ProviderList,
    ProviderAdd,
    ProviderSet,
    RunStart,
    RunEnd,
    Watch,
    HostList,
    HostAdd,
    HostRevoke,
    HostJoin,
    LogPage,
    HostRenew,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Which route.
    pub route: Route,
    /// Its method.
    pub method: Method,
    /// Its path.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Its name in tracing spans.
    pub name: &'static str,
}

macro_rules! routes {
    ($($route:ident $method:ident $path:literal $access:ident $name:literal;)*) => {
        /// The table.
        pub const ROUTES: &[RouteSpec] = &[$(RouteSpec {
            route: Route::$route,
            method: Method::$method,
            path: $path,
            access: Access::$access,
            name: $name,
        }),*];
    };
}

routes! {
    Health        Get  "/v1/health"          Anyone   "health";
    Resolve       Post "/v1/resolve"         Identity "resolve";
    Whoami        Get  "/v1/whoami"          Identity "whoami";
    Status        Get  "/v1/status"          Identity "status";
    ProjectList   Get  "/v1/projects"        Admin    "project.list";
    ProjectCreate Post "/v1/projects"        Admin    "project.create";
    SecretList    Get  "/v1/secrets"         Admin    "secret.list";
    SecretPut     Post "/v1/secrets"         Admin    "secret.put";
    SecretRotate  Post "/v1/secrets/rotate"  Admin    "secret.rotate";
    SecretRevoke  Post "/v1/secrets/revoke"  Admin    "secret.revoke";
    SecretDelete  Post "/v1/secrets/delete"  Admin    "secret.delete";
    AgentList     Get  "/v1/agents"          Admin    "agent.list";
    AgentCreate   Post "/v1/agents"          Admin    "agent.create";
    AgentRevoke   Post "/v1/agents/revoke"   Admin    "agent.revoke";
    AgentReissue  Post "/v1/agents/reissue"  Admin    "agent.reissue";
    MemberList    Get  "/v1/members"         Admin    "member.list";
    MemberAdd     Post "/v1/members"         Admin    "member.add";
    MemberRemove  Post "/v1/members/remove"  Admin    "member.remove";
    MemberAdmin   Post "/v1/members/admin"   Admin    "member.admin";
    SecretAssign  Post "/v1/secrets/assign"  Admin    "secret.assign";
    SecretUnassign Post "/v1/secrets/unassign" Admin  "secret.unassign";
    ResolveAll    Post "/v1/resolve/all"     Identity "resolve.all";
    GrantList     Get  "/v1/grants"          Admin    "grant.list";
    GrantCreate   Post "/v1/grants"          Admin    "grant.create";
    GrantRevoke   Post "/v1/grants/revoke"   Admin    "grant.revoke";
    ProviderList  Get  "/v1/providers"       Identity "provider.list";
    ProviderAdd   Post "/v1/providers"       Admin    "provider.add";
    ProviderSet   Post "/v1/providers/set"   Admin    "provider.set";
    RunStart      Post "/v1/runs"            Identity "run.start";
    RunEnd        Post "/v1/runs/end"        Identity "run.end";
    Watch         Post "/v1/watch"           Identity "watch";
    HostList      Get  "/v1/hosts"           Admin    "host.list";
    HostAdd       Post "/v1/hosts"           Admin    "host.add";
    HostRevoke    Post "/v1/hosts/revoke"    Admin    "host.revoke";
    HostJoin      Post "/v1/hosts/join"      Enrolling "host.join";
    LogPage       Post "/v1/log/page"        Admin    "log.page";
    HostRenew     Post "/v1/hosts/renew"     Enrolling "host.renew";
}

impl Route {
    /// This route's row.
    pub fn spec(self) -> &'static RouteSpec {
        ROUTES
            .iter()
            .find(|r| r.route == self)
            // Every variant has a row: checked by `every_route_has_one_row`.
            .expect("every route is in the table")
    }
}

/// Finds the route for a request: 404 for an unknown path, 405 for a known path with another
/// method.
pub fn lookup(method: &str, path: &str) -> Result<&'static RouteSpec, ApiError> {
    let mut path_known = false;
    for r in ROUTES {
        if r.path == path {
            if r.method.as_str() == method {
                return Ok(r);
            }
            path_known = true;
        }
    }
    Err(if path_known {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NoRoute
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_row_and_lookup_tells_404_from_405() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert_eq!(a.route.spec(), a);
            for b in &ROUTES[i + 1..] {
                assert!(a.route != b.route && (a.path, a.method) != (b.path, b.method));
            }
        }
        assert_eq!(lookup("POST", "/v1/resolve").unwrap().route, Route::Resolve);
        assert_eq!(
            lookup("GET", "/v1/resolve"),
            Err(ApiError::MethodNotAllowed)
        );
        assert_eq!(
            lookup("DELETE", "/v1/grants"),
            Err(ApiError::MethodNotAllowed)
        );
        assert_eq!(lookup("GET", "/v1/nope"), Err(ApiError::NoRoute));
    }
}

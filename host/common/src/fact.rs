//! The facts of a request a plugin's request hook may declare it depends on
//! (WIT `setup.request-fact`): the SDK's declaration, and what the gateway —
//! or the SDK's test double — checks a call's reads against.

/// A fact of the request. `H` holds a header name and `S` a path param or
/// context key: `String`s in a declaration, `&str`s for a read being
/// checked against one (the gateway keeps declared header names parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFact<H = String, S = String> {
    Method,
    Path,
    Query,
    Scheme,
    Authority,
    ClientAddress,
    /// Every value of this header.
    Header(H),
    /// This route capture.
    PathParam(S),
    /// This entry of the request context.
    Context(S),
}

/// A read being checked: names borrowed from the call.
pub type Read<'a> = RequestFact<&'a str, &'a str>;

impl<H: AsRef<str>, S: AsRef<str>> RequestFact<H, S> {
    /// Whether this declared fact covers `read`; header names compare
    /// without case.
    pub fn covers(&self, read: &Read<'_>) -> bool {
        match (self, read) {
            (Self::Method, Read::Method)
            | (Self::Path, Read::Path)
            | (Self::Query, Read::Query)
            | (Self::Scheme, Read::Scheme)
            | (Self::Authority, Read::Authority)
            | (Self::ClientAddress, Read::ClientAddress) => true,
            (Self::Header(n), Read::Header(r)) => n.as_ref().eq_ignore_ascii_case(r),
            (Self::PathParam(n), Read::PathParam(r)) | (Self::Context(n), Read::Context(r)) => n.as_ref() == *r,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_covers_only_its_own_reads() {
        let header: RequestFact = RequestFact::Header("Origin".into());
        assert!(header.covers(&Read::Header("origin")));
        assert!(!header.covers(&Read::Header("x-origin")));
        assert!(!header.covers(&Read::Context("origin")));
        let key: RequestFact = RequestFact::Context("jwt.claims".into());
        assert!(key.covers(&Read::Context("jwt.claims")));
        assert!(!key.covers(&Read::Context("JWT.claims")), "context keys are exact");
        assert!(RequestFact::<String, String>::Method.covers(&Read::Method));
        assert!(!RequestFact::<String, String>::Method.covers(&Read::Path));
    }
}

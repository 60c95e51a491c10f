//! Why the core refuses a request it understood: one variant per reason, each mapped to the
//! status that answers it, the reason phrase sent with it and the metric label that counts it
//! (as `sipfront_proto::ErrorKind` does for what cannot be parsed). Challenges (401/407) and
//! store outages (503) are not refusals: the request may succeed when repeated.

use sipfront_proto::{reply, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    // Digest credentials (RFC 3261 22, RFC 7616).
    /// Credentials that do not parse, or a nonce count that is not hex.
    MalformedCredentials,
    /// A digest parameter longer than any real one.
    OversizedParameter,
    /// A digest parameter the scheme requires is missing.
    MissingParameter,
    /// The `uri` parameter is not the Request-URI (RFC 7616 3.4.6).
    UriMismatch,
    /// Too many failures for this user from this address, or from this address at all.
    LockedOut,

    // REGISTER (RFC 3261 10.3, RFC 5626).
    BadContact,
    BadExpires,
    BadCSeq,
    /// `Contact: *` with other contacts or an Expires other than 0 (step 6).
    StarNeedsExpiresZero,
    /// A CSeq not above the last one of the same Call-ID (step 7).
    CSeqOutOfOrder,
    /// RFC 5626 6: outbound through a first hop whose Path lacks `ob`.
    FirstHopLacksOutbound,

    // Who may send what (RFC 3261 16.4, and no relaying for strangers).
    /// The Request-URI or To names a domain this server does not serve (no federation).
    DomainNotServed,
    /// A From of a domain this server does not serve: not one of our users.
    UnknownFromDomain,
    /// The From is not the user who authenticated.
    NotTheAuthenticatedUser,
    /// A Route naming somewhere other than us: we are not an open relay.
    RouteElsewhere,

    // Requests inside a dialog we record-routed (RFC 3261 16.12, RFC 5626 5.3).
    /// Our Route entry does not name the two legs of a dialog.
    MalformedRoute,
    /// The sender is neither party of the dialog its Route names.
    NotAParty,
    /// A dialog's route token used past `proxy.dialog_max_hours`.
    DialogExpired,
    /// A dialog's route token on a request of another dialog, or one whose From is not the
    /// party of its leg.
    NotOfTheDialog,
    /// The other party's connection is gone.
    FlowFailed,

    // Federation with partner domains (issue 20). Each is answered with a Warning too.
    /// The operator's policy does not federate with that domain (closed mode and not on the
    /// allow list, or blocked).
    PartnerNotAllowed,
    /// Our user sending out is not enabled for federation.
    SenderNotFederated,
    /// A partner's request for a user who does not federate, is disabled, or does not exist:
    /// one answer for all three, so that partners cannot enumerate our users.
    RecipientNotFederated,
    /// A partner's From names a domain its connection's certificate does not.
    CertificateNotOfDomain,
    /// The domain publishes no federation edge (no `_sipfederationtls._tcp` SRV record).
    NoFederationEdge,
    /// The domain's edge is this server.
    FederationLoop,
    /// No edge of the domain could be connected to.
    EdgeUnreachable,
    /// The edge's certificate does not chain to our trust roots or does not name the domain.
    EdgeCertificate,
    /// DNS did not answer, or no edge did, in time.
    EdgeTimeout,
    /// DNS answered with a failure.
    DnsFailed,
}

impl Refusal {
    pub fn status(self) -> u16 {
        use Refusal::*;
        match self {
            MalformedCredentials | OversizedParameter | MissingParameter | UriMismatch => 400,
            LockedOut => 403,
            BadContact | BadExpires | BadCSeq | StarNeedsExpiresZero | CSeqOutOfOrder => 400,
            FirstHopLacksOutbound => 439,
            DomainNotServed => 404,
            UnknownFromDomain | NotTheAuthenticatedUser | RouteElsewhere => 403,
            MalformedRoute => 400,
            NotAParty | NotOfTheDialog => 403,
            DialogExpired => 481,
            FlowFailed => 430,
            PartnerNotAllowed | SenderNotFederated | RecipientNotFederated | CertificateNotOfDomain => 403,
            NoFederationEdge => 404,
            FederationLoop => 482,
            EdgeUnreachable | EdgeCertificate | DnsFailed => 502,
            EdgeTimeout => 504,
        }
    }

    /// The metric label (`sipfront_auth_failures_total{reason}`,
    /// `sipfront_registrations_total{result}`).
    pub fn label(self) -> &'static str {
        use Refusal::*;
        match self {
            MalformedCredentials => "malformed",
            OversizedParameter => "oversized_parameter",
            MissingParameter => "missing_parameter",
            UriMismatch => "uri_mismatch",
            LockedOut => "locked_out",
            BadContact => "bad_contact",
            BadExpires => "bad_expires",
            BadCSeq => "bad_cseq",
            StarNeedsExpiresZero => "star_needs_expires_0",
            CSeqOutOfOrder => "cseq_out_of_order",
            FirstHopLacksOutbound => "first_hop_lacks_outbound",
            DomainNotServed => "domain_not_served",
            UnknownFromDomain => "unknown_from_domain",
            NotTheAuthenticatedUser => "not_the_authenticated_user",
            RouteElsewhere => "route_elsewhere",
            MalformedRoute => "malformed_route",
            NotAParty => "not_a_party",
            DialogExpired => "dialog_expired",
            NotOfTheDialog => "not_of_the_dialog",
            FlowFailed => "flow_failed",
            PartnerNotAllowed => "partner_not_allowed",
            SenderNotFederated => "sender_not_federated",
            RecipientNotFederated => "recipient_not_federated",
            CertificateNotOfDomain => "certificate_not_of_domain",
            NoFederationEdge => "no_federation_edge",
            FederationLoop => "federation_loop",
            EdgeUnreachable => "edge_unreachable",
            EdgeCertificate => "edge_certificate",
            EdgeTimeout => "edge_timeout",
            DnsFailed => "dns_failed",
        }
    }

    /// The reason phrase: the status's own, with what went wrong where that helps the sender.
    pub fn phrase(self) -> &'static str {
        use Refusal::*;
        match self {
            MalformedCredentials => "Bad Request (malformed)",
            OversizedParameter => "Bad Request (oversized_parameter)",
            MissingParameter => "Bad Request (missing_parameter)",
            UriMismatch => "Bad Request (uri_mismatch)",
            LockedOut => "Forbidden (locked_out)",
            BadContact => "Bad Request (bad_contact)",
            BadExpires => "Bad Request (bad_expires)",
            BadCSeq => "Bad Request (bad_cseq)",
            StarNeedsExpiresZero => "Bad Request (star_needs_expires_0)",
            CSeqOutOfOrder => "Bad Request (cseq_out_of_order)",
            FirstHopLacksOutbound => "First Hop Lacks Outbound Support",
            DomainNotServed => "Domain Not Served",
            UnknownFromDomain => "Forbidden (unknown From domain)",
            NotTheAuthenticatedUser => "Forbidden (From does not match the authenticated user)",
            RouteElsewhere => "Forbidden (Route to elsewhere: not a relay)",
            MalformedRoute => "Bad Request (malformed Route)",
            NotAParty => "Forbidden (not a party to this dialog)",
            DialogExpired => "Call/Transaction Does Not Exist (the dialog's route expired)",
            NotOfTheDialog => "Forbidden (not this dialog, or not its party)",
            FlowFailed => "Flow Failed",
            PartnerNotAllowed => "Forbidden (no federation with this domain)",
            SenderNotFederated => "Forbidden (federation is not enabled for the sender)",
            RecipientNotFederated => "Forbidden (the user does not federate)",
            CertificateNotOfDomain => "Forbidden (the certificate does not name the From domain)",
            NoFederationEdge => "Not Found (the domain has no federation edge)",
            FederationLoop => "Loop Detected (the domain's federation edge is this server)",
            EdgeUnreachable => "Bad Gateway (the partner's edge is unreachable)",
            EdgeCertificate => "Bad Gateway (the partner edge's certificate is refused)",
            EdgeTimeout => "Server Time-out (the partner's edge or DNS did not answer)",
            DnsFailed => "Bad Gateway (DNS lookup failed)",
        }
    }

    /// Federation's refusals also carry a Warning (RFC 3261 20.43, code 399), which clients
    /// show where they hide reason phrases: what the operator's policy or the partner did.
    fn warning(self) -> Option<&'static str> {
        use Refusal::*;
        Some(match self {
            PartnerNotAllowed => "federation with this domain is not allowed",
            SenderNotFederated => "federation is not enabled for the sender",
            RecipientNotFederated => "the user does not federate",
            CertificateNotOfDomain => "the TLS certificate does not name the From domain",
            NoFederationEdge => "the domain publishes no federation edge",
            FederationLoop => "the domain's federation edge is this server",
            EdgeUnreachable => "the partner's federation edge is unreachable",
            EdgeCertificate => "the partner edge's certificate is not trusted for the domain",
            EdgeTimeout => "the partner's federation edge or DNS timed out",
            DnsFailed => "the DNS lookup of the partner's edge failed",
            _ => return None,
        })
    }

    /// The response refusing `req`.
    pub fn response(self, req: &Message, agent: &str) -> Message {
        let mut r = reply::response(req, self.status(), agent);
        r.set_reason(self.phrase());
        if let Some(text) = self.warning() {
            r.push_header(sipfront_proto::HeaderName::Warning, format!("399 sipfront \"{text}\""));
        }
        r
    }
}

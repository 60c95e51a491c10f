//! Header field names: the known ones as variants (compact forms folded in, RFC 3261 7.3.3),
//! anything else by its spelling.

/// A header field name. The ones the server acts on or that RFC 3261 defines are variants, so
/// that looking a header up is an integer compare; anything else is [`HeaderName::Other`] and
/// keeps its spelling in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    AllowEvents,
    AuthenticationInfo,
    Authorization,
    CallId,
    CallInfo,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLanguage,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    ErrorInfo,
    Event,
    Expires,
    FlowTimer,
    From,
    InReplyTo,
    MaxForwards,
    MimeVersion,
    MinExpires,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    Path,
    Priority,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    ServiceRoute,
    SessionExpires,
    SipETag,
    SipIfMatch,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    /// Any other name; the message keeps the name as it was written.
    Other,
}

impl HeaderName {
    /// The canonical spelling, as RFC 3261 and its extensions write it. Empty for `Other`.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptEncoding => "Accept-Encoding",
            AcceptLanguage => "Accept-Language",
            AlertInfo => "Alert-Info",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            AuthenticationInfo => "Authentication-Info",
            Authorization => "Authorization",
            CallId => "Call-ID",
            CallInfo => "Call-Info",
            Contact => "Contact",
            ContentDisposition => "Content-Disposition",
            ContentEncoding => "Content-Encoding",
            ContentLanguage => "Content-Language",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            ErrorInfo => "Error-Info",
            Event => "Event",
            Expires => "Expires",
            FlowTimer => "Flow-Timer",
            From => "From",
            InReplyTo => "In-Reply-To",
            MaxForwards => "Max-Forwards",
            MimeVersion => "MIME-Version",
            MinExpires => "Min-Expires",
            Organization => "Organization",
            PAssertedIdentity => "P-Asserted-Identity",
            PPreferredIdentity => "P-Preferred-Identity",
            Path => "Path",
            Priority => "Priority",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RAck => "RAck",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            ReplyTo => "Reply-To",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            RSeq => "RSeq",
            Server => "Server",
            ServiceRoute => "Service-Route",
            SessionExpires => "Session-Expires",
            SipETag => "SIP-ETag",
            SipIfMatch => "SIP-If-Match",
            Subject => "Subject",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            Timestamp => "Timestamp",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            Other => "",
        }
    }

    /// Classifies a header name as written on the wire: case-insensitive, compact forms
    /// included (RFC 3261 7.3.3 and the extensions that define one).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'i' => CallId,
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'o' => Event,
                b'e' => ContentEncoding,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'u' => AllowEvents,
                b'x' => SessionExpires,
                _ => Other,
            };
        }
        // Candidates by length, so that a lookup compares against two or three names at most.
        let candidates: &[HeaderName] = match name.len() {
            2 => &[To],
            3 => &[Via],
            4 => &[From, CSeq, Date, Path, RAck, RSeq],
            5 => &[Allow, Event, Route],
            6 => &[Accept, Reason, Server],
            7 => &[Contact, Expires, CallId, Subject, Require, Warning],
            8 => &[Priority, ReplyTo, ReferTo, SipETag],
            9 => &[Supported, CallInfo, Timestamp],
            10 => &[UserAgent, AlertInfo, ErrorInfo, FlowTimer],
            11 => &[MinExpires, RetryAfter, InReplyTo, ReferredBy, Unsupported],
            12 => &[MaxForwards, ContentType, RecordRoute, AllowEvents, SipIfMatch, MimeVersion, Organization],
            13 => &[Authorization, ProxyRequire, ServiceRoute],
            14 => &[ContentLength],
            15 => &[AcceptEncoding, AcceptLanguage, SessionExpires],
            16 => &[WwwAuthenticate, ContentEncoding, ContentLanguage],
            18 => &[ProxyAuthenticate, SubscriptionState],
            19 => &[ProxyAuthorization, AuthenticationInfo, ContentDisposition, PAssertedIdentity],
            20 => &[PPreferredIdentity],
            _ => &[],
        };
        // Most peers write the canonical spelling, which one memcmp confirms; otherwise the first
        // letter tells most candidates apart before a case-insensitive comparison.
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        candidates
            .iter()
            .copied()
            .find(|c| {
                let canonical = c.as_str().as_bytes();
                canonical == name
                    || (canonical.first().map(u8::to_ascii_lowercase) == Some(first)
                        && canonical.eq_ignore_ascii_case(name))
            })
            .unwrap_or(Other)
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    const ALL: &[HeaderName] = {
        use HeaderName::*;
        &[
            Accept,
            AcceptEncoding,
            AcceptLanguage,
            AlertInfo,
            Allow,
            AllowEvents,
            AuthenticationInfo,
            Authorization,
            CallId,
            CallInfo,
            Contact,
            ContentDisposition,
            ContentEncoding,
            ContentLanguage,
            ContentLength,
            ContentType,
            CSeq,
            Date,
            ErrorInfo,
            Event,
            Expires,
            FlowTimer,
            From,
            InReplyTo,
            MaxForwards,
            MimeVersion,
            MinExpires,
            Organization,
            PAssertedIdentity,
            PPreferredIdentity,
            Path,
            Priority,
            ProxyAuthenticate,
            ProxyAuthorization,
            ProxyRequire,
            RAck,
            Reason,
            RecordRoute,
            ReferTo,
            ReferredBy,
            ReplyTo,
            Require,
            RetryAfter,
            Route,
            RSeq,
            Server,
            ServiceRoute,
            SessionExpires,
            SipETag,
            SipIfMatch,
            Subject,
            SubscriptionState,
            Supported,
            Timestamp,
            To,
            Unsupported,
            UserAgent,
            Via,
            Warning,
            WwwAuthenticate,
        ]
    };

    #[test]
    fn every_known_name_classifies_as_itself_in_any_case() {
        for &name in ALL {
            let s = name.as_str();
            assert_eq!(HeaderName::from_bytes(s.as_bytes()), name, "{s}");
            assert_eq!(HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()), name, "{s}");
            assert_eq!(HeaderName::from_bytes(s.to_ascii_uppercase().as_bytes()), name, "{s}");
        }
    }

    #[test]
    fn compact_forms_and_unknown_names() {
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"z"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
    }
}

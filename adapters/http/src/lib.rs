//! huizhen-http: HTTP out of the engine. One component so far, the `http` sink
//! ([`sink`]): each message becomes one request to a URL template, with the message id as the
//! idempotency key; 2xx is delivered, 4xx is a dead letter with the answer, 408/425/429/5xx and
//! transport errors are retried (honouring `Retry-After`).

pub mod sink;

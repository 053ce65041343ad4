//! Pre-order lifecycle after the reservation: payment-callback verification, the expiry
//! sweeper that closes unpaid pre-orders at their deadline, and the outbox consumer that
//! hands paid orders to the sink.

pub mod outbox;
pub mod payment;
pub mod sweeper;

//! Shared library of the subscription-billing functions: the i'mport client,
//! the DynamoDB store, the billing rules and the services the handlers call.

pub mod app;
pub mod billing;
pub mod charging;
pub mod config;
pub mod iamport;
pub mod notification;
pub mod registration;
pub mod secret;
pub mod store;
pub mod telemetry;

//! What is on sale: [`events`] and, for a seated event, its zones and seats
//! ([`seating`]).

pub mod events;
pub mod seating;

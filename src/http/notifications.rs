//! The Notifications API's project subscriptions and their deliveries: each parses the request,
//! asks the notifications service, renders the answer.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::request::Request;
use crate::http::{blocking, Services};
use crate::model::{format_time, Channel, Delivery, Subscription};

type Reply = Result<Answer, ApiError>;

/// `POST /project-subscriptions {"event", "filters"?, "recipient", "expiresAt"?}`: 201.
pub async fn subscribe(services: &Services, mut request: Request) -> Reply {
    let body = request.body().await?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The body must be a JSON object."))?;
    let subscription = blocking(|| services.notifications.subscribe(&body))?;
    Ok(Answer::json(
        StatusCode::CREATED,
        &subscription_object(&subscription),
    ))
}

/// `GET /project-subscriptions[?event=]`
pub async fn list(services: &Services, request: Request) -> Reply {
    let event = request.query.one("event");
    let all = blocking(|| services.notifications.subscriptions(event))?;
    Ok(Answer::ok(&all.iter().map(subscription_object).collect()))
}

pub async fn get(services: &Services, request: Request) -> Reply {
    let subscription = blocking(|| services.notifications.subscription(request.segment("id")))?;
    Ok(Answer::ok(&subscription_object(&subscription)))
}

pub async fn delete(services: &Services, request: Request) -> Reply {
    blocking(|| services.notifications.unsubscribe(request.segment("id")))?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `GET /project-subscriptions/{id}/deliveries`: every delivery, newest first, with its attempts.
pub async fn deliveries(services: &Services, request: Request) -> Reply {
    let deliveries = blocking(|| services.notifications.deliveries(request.segment("id")))?;
    Ok(Answer::ok(
        &deliveries.iter().rev().map(delivery_object).collect(),
    ))
}

/// The subscription as the public API answers it: ids as strings, `operator` always given, the
/// webhook's URL as `url`.
fn subscription_object(subscription: &Subscription) -> Value {
    let recipient = &subscription.recipient;
    let key = match recipient.channel {
        Channel::Webhook => "url",
        Channel::Email => "address",
    };
    let filters = subscription.filters.iter().map(
        |filter| json!({"field": filter.field, "operator": filter.operator, "value": filter.value}),
    );
    json!({
        "id": subscription.id.to_string(),
        "event": subscription.event,
        "filters": filters.collect::<Vec<_>>(),
        "recipient": {"channel": recipient.channel.as_str(), key: recipient.address},
        "expiresAt": subscription.expires_at.map(format_time),
        "createdAt": format_time(subscription.created),
    })
}

/// A delivery (a jobq addition): its event, body, state and every attempt with its answer.
fn delivery_object(delivery: &Delivery) -> Value {
    let attempts = delivery.attempts.iter().map(|attempt| {
        json!({
            "time": format_time(attempt.time),
            "statusCode": attempt.status_code,
            "error": attempt.error,
        })
    });
    let pending = delivery.state == crate::model::DeliveryState::Pending;
    json!({
        "id": delivery.id.to_string(),
        "event": delivery.event_type,
        "state": delivery.state.as_str(),
        "createdAt": format_time(delivery.created),
        "nextAttemptAt": pending.then(|| format_time(delivery.next_attempt)),
        "attempts": attempts.collect::<Vec<_>>(),
        "payload": delivery.payload,
    })
}

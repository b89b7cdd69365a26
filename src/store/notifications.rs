//! Project subscriptions and the notification outbox in the store. Deliveries are written in
//! the transaction that ends their job (`Store::update_job_with_event`), so an event is never
//! lost; a delivery stays in `PENDING_DELIVERIES` until it is delivered, failed for good or
//! recorded as not sent.

use redb::{ReadableTable, WriteTransaction};

use super::tables::*;
use super::{codec, next_in_sequence, Fail, Store, StoreError};
use crate::model::{Delivery, DeliveryState, Subscription};

impl Store {
    /// Stores the subscription `make(id)` returns under the next id of its sequence.
    pub fn create_subscription(
        &self,
        make: impl FnOnce(u64) -> Subscription,
    ) -> Result<Subscription, StoreError> {
        self.write("creating a subscription", |txn| {
            let id = next_in_sequence(txn, META_LAST_SUBSCRIPTION_ID, "subscription")?;
            let mut subscription = make(id);
            subscription.id = id;
            txn.open_table(SUBSCRIPTIONS)?
                .insert(id, codec::encode_subscription(&subscription)?.as_slice())?;
            Ok(subscription)
        })
    }

    /// Every subscription, in id order.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.read("listing subscriptions", |txn| {
            decode_subscriptions(&txn.open_table(SUBSCRIPTIONS)?)
        })
    }

    /// Deletes subscription `id` with its deliveries; `false` when there is none.
    pub fn delete_subscription(&self, id: u64) -> Result<bool, StoreError> {
        self.write("deleting a subscription", |txn| {
            if txn.open_table(SUBSCRIPTIONS)?.remove(id)?.is_none() {
                return Ok(false);
            }
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut pending = txn.open_table(PENDING_DELIVERIES)?;
            let ids: Vec<u64> = deliveries
                .range((id, 0)..=(id, u64::MAX))?
                .map(|entry| entry.map(|(key, _)| key.value().1))
                .collect::<Result<_, _>>()?;
            for delivery in ids {
                deliveries.remove((id, delivery))?;
                pending.remove(delivery)?;
            }
            Ok(true)
        })
    }

    /// The deliveries of subscription `id`, oldest first.
    pub fn deliveries(&self, subscription: u64) -> Result<Vec<Delivery>, StoreError> {
        self.read("listing deliveries", |txn| {
            let table = txn.open_table(DELIVERIES)?;
            let mut found = Vec::new();
            for entry in table.range((subscription, 0)..=(subscription, u64::MAX))? {
                found.push(codec::decode_delivery(entry?.1.value())?);
            }
            Ok(found)
        })
    }

    /// The outbox: every delivery still to be sent, oldest first.
    pub fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.read("reading the notification outbox", |txn| {
            let pending = txn.open_table(PENDING_DELIVERIES)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            let mut found = Vec::new();
            for entry in pending.iter()? {
                let (id, subscription) = entry?;
                if let Some(record) = deliveries.get((subscription.value(), id.value()))? {
                    found.push(codec::decode_delivery(record.value())?);
                }
            }
            Ok(found)
        })
    }

    /// Adds the processing-long `deliveries` of running job `job_id`, each unless its
    /// subscription already got one for this job; how many were added.
    pub fn add_long_run_deliveries(
        &self,
        job_id: u64,
        deliveries: Vec<Delivery>,
    ) -> Result<usize, StoreError> {
        self.write("adding processing-long deliveries", |txn| {
            let mut fresh = Vec::new();
            {
                let mut notified = txn.open_table(LONG_RUNS_NOTIFIED)?;
                for delivery in deliveries {
                    let key = (delivery.subscription_id, job_id);
                    if notified.get(key)?.is_none() {
                        notified.insert(key, 0)?;
                        fresh.push(delivery);
                    }
                }
            }
            let added = fresh.len();
            insert_deliveries(txn, fresh)?;
            Ok(added)
        })
    }

    /// Writes `delivery` after an attempt; it leaves the outbox unless still pending. A
    /// delivery whose subscription was deleted meanwhile is not written again.
    pub fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.write("recording a delivery attempt", |txn| {
            let key = (delivery.subscription_id, delivery.id);
            let mut deliveries = txn.open_table(DELIVERIES)?;
            if deliveries.get(key)?.is_none() {
                return Ok(());
            }
            deliveries.insert(key, codec::encode_delivery(delivery)?.as_slice())?;
            if delivery.state != DeliveryState::Pending {
                txn.open_table(PENDING_DELIVERIES)?.remove(delivery.id)?;
            }
            Ok(())
        })
    }
}

pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), Fail> {
    txn.open_table(SUBSCRIPTIONS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(PENDING_DELIVERIES)?;
    txn.open_table(LONG_RUNS_NOTIFIED)?;
    Ok(())
}

pub(super) fn all_subscriptions(txn: &WriteTransaction) -> Result<Vec<Subscription>, Fail> {
    decode_subscriptions(&txn.open_table(SUBSCRIPTIONS)?)
}

/// Inserts new deliveries with ids of the delivery sequence; pending ones join the outbox.
pub(super) fn insert_deliveries(
    txn: &WriteTransaction,
    deliveries: Vec<Delivery>,
) -> Result<(), Fail> {
    for mut delivery in deliveries {
        delivery.id = next_in_sequence(txn, META_LAST_DELIVERY_ID, "delivery")?;
        txn.open_table(DELIVERIES)?.insert(
            (delivery.subscription_id, delivery.id),
            codec::encode_delivery(&delivery)?.as_slice(),
        )?;
        if delivery.state == DeliveryState::Pending {
            txn.open_table(PENDING_DELIVERIES)?
                .insert(delivery.id, delivery.subscription_id)?;
        }
    }
    Ok(())
}

fn decode_subscriptions(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<Subscription>, Fail> {
    let mut found = Vec::new();
    for entry in table.iter()? {
        found.push(codec::decode_subscription(entry?.1.value())?);
    }
    Ok(found)
}

//! The demo data set loaded by `switchboard seed --demo`: a few tenants on
//! different plan tiers, their agents, numbers and known callers, including
//! the switched-off cases so every answer of the API can be tried.
//!
//! Idempotent: fixed ids and `on conflict do nothing`, so seeding twice
//! changes nothing and never overwrites what a user edited.

use tokio_postgres::Client;

/// Numbers in the demo data and what the router answers for each.
pub const DEMO_NUMBERS: &[(&str, &str)] = &[
    ("+14155550100", "Acme Dental (starter) → Reception"),
    ("+14155550142", "Northwind Realty (pro) → Leasing"),
    (
        "+442079460123",
        "Northwind Realty (pro) → Leasing, UK number",
    ),
    ("+13125550100", "Globex Health (enterprise) → Triage"),
    ("+14155550143", "FAILED_PRECONDITION: agent inactive"),
    ("+14155550144", "FAILED_PRECONDITION: number inactive"),
    ("+12125550100", "FAILED_PRECONDITION: organization inactive"),
];

/// A caller that is a known customer of Acme Dental.
pub const DEMO_KNOWN_CALLER: &str = "+14155550123";

const DEMO_SQL: &str = r#"
insert into public.organizations (id, slug, name, plan_tier, settings, is_active) values
  ('00000000-0000-4000-8000-00000000a001', 'acme-dental', 'Acme Dental', 'starter',
   '{"timezone": "America/Los_Angeles", "business_hours": "08:00-17:00"}', true),
  ('00000000-0000-4000-8000-00000000a002', 'northwind-realty', 'Northwind Realty', 'pro',
   '{"timezone": "America/New_York", "record_calls": true}', true),
  ('00000000-0000-4000-8000-00000000a003', 'globex-health', 'Globex Health', 'enterprise',
   '{"timezone": "America/Chicago", "record_calls": true, "hipaa": true}', true),
  ('00000000-0000-4000-8000-00000000a004', 'initech', 'Initech', 'starter',
   '{}', false)
on conflict do nothing;

insert into public.agents (id, org_id, name, voice_id, llm_config, is_active) values
  ('00000000-0000-4000-8000-00000000b001', '00000000-0000-4000-8000-00000000a001',
   'Reception', 'aura-asteria-en',
   '{"model": "gpt-4o-mini", "temperature": 0.3, "system_prompt": "You are the front desk of Acme Dental. Book, move and cancel appointments."}', true),
  ('00000000-0000-4000-8000-00000000b002', '00000000-0000-4000-8000-00000000a002',
   'Leasing', 'aura-orion-en',
   '{"model": "gpt-4o", "temperature": 0.5, "tools": ["search_listings", "book_viewing"]}', true),
  ('00000000-0000-4000-8000-00000000b003', '00000000-0000-4000-8000-00000000a002',
   'After hours', 'aura-luna-en',
   '{"model": "gpt-4o-mini"}', false),
  ('00000000-0000-4000-8000-00000000b004', '00000000-0000-4000-8000-00000000a003',
   'Triage', 'aura-athena-en',
   '{"model": "gpt-4o", "temperature": 0.2, "tools": ["lookup_patient", "escalate_to_nurse"]}', true),
  ('00000000-0000-4000-8000-00000000b005', '00000000-0000-4000-8000-00000000a004',
   'Support', 'aura-asteria-en', '{"model": "gpt-4o-mini"}', true)
on conflict do nothing;

insert into public.phone_numbers (id, org_id, agent_id, number, is_active) values
  ('00000000-0000-4000-8000-00000000c001', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000b001', '+14155550100', true),
  ('00000000-0000-4000-8000-00000000c002', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b002', '+14155550142', true),
  ('00000000-0000-4000-8000-00000000c003', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b002', '+442079460123', true),
  ('00000000-0000-4000-8000-00000000c004', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000b004', '+13125550100', true),
  ('00000000-0000-4000-8000-00000000c005', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b003', '+14155550143', true),
  ('00000000-0000-4000-8000-00000000c006', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b002', '+14155550144', false),
  ('00000000-0000-4000-8000-00000000c007', '00000000-0000-4000-8000-00000000a004',
   '00000000-0000-4000-8000-00000000b005', '+12125550100', true)
on conflict do nothing;

insert into public.customers (id, org_id, phone, name, email) values
  ('00000000-0000-4000-8000-00000000d001', '00000000-0000-4000-8000-00000000a001',
   '+14155550123', 'Dana Whitfield', 'dana@example.com'),
  ('00000000-0000-4000-8000-00000000d002', '00000000-0000-4000-8000-00000000a003',
   '+13125550199', 'Sam Okafor', null)
on conflict do nothing;
"#;

/// Loads the demo data set in one transaction.
pub async fn demo(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(DEMO_SQL).await?;
    tx.commit().await
}

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
    (
        "+14155550150",
        "Acme Dental → Reception in office hours (Mon–Fri 08:00–17:00 Los Angeles), Voicemail after hours",
    ),
    (
        "+14155550151",
        "Acme Dental → Reception, one call at a time; the overflow is transferred to +14155550199",
    ),
    (
        "+13125550150",
        "Globex Health → 90 % Triage, 10 % Triage (new prompt), by gateway call id",
    ),
    (
        "+14155550145",
        "Northwind Realty → Leasing; callers on its block list (+19005550100, +1900…) rejected (decline, SIP 603)",
    ),
    (
        "+13125550151",
        "Globex Health → Triage; its VIP +13125550199 → Concierge",
    ),
    (
        "+16465550123",
        "Northwind Realty → Leasing, through its range +1646555",
    ),
];

/// A caller on Northwind Realty's block list.
pub const DEMO_BLOCKED_CALLER: &str = "+19005550123";
/// Globex Health's VIP caller (also its known customer).
pub const DEMO_VIP_CALLER: &str = "+13125550199";

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

-- call workflows (V9): each on a number of its own

insert into public.agents (id, org_id, name, voice_id, llm_config, is_active) values
  ('00000000-0000-4000-8000-00000000b006', '00000000-0000-4000-8000-00000000a001',
   'Voicemail', 'aura-asteria-en',
   '{"model": "gpt-4o-mini", "system_prompt": "The office is closed. Take a message and say when it opens."}', true),
  ('00000000-0000-4000-8000-00000000b007', '00000000-0000-4000-8000-00000000a003',
   'Triage (new prompt)', 'aura-athena-en',
   '{"model": "gpt-4o", "temperature": 0.2, "tools": ["lookup_patient", "escalate_to_nurse"], "prompt_version": 2}', true),
  ('00000000-0000-4000-8000-00000000b008', '00000000-0000-4000-8000-00000000a003',
   'Concierge', 'aura-orion-en', '{"model": "gpt-4o", "tools": ["book_priority_slot"]}', true)
on conflict do nothing;

insert into public.phone_numbers (id, org_id, agent_id, number, is_active, concurrency_limit) values
  ('00000000-0000-4000-8000-00000000c008', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000b001', '+14155550150', true, null),
  ('00000000-0000-4000-8000-00000000c009', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000b001', '+14155550151', true, 1),
  ('00000000-0000-4000-8000-00000000c010', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000b004', '+13125550150', true, null),
  ('00000000-0000-4000-8000-00000000c011', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b002', '+14155550145', true, null),
  ('00000000-0000-4000-8000-00000000c012', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000b004', '+13125550151', true, null)
on conflict do nothing;

insert into public.number_ranges (id, org_id, agent_id, prefix) values
  ('00000000-0000-4000-8000-00000000f001', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000b002', '+1646555')
on conflict do nothing;

insert into public.schedules (id, org_id, name, time_zone) values
  ('00000000-0000-4000-8000-00000000e001', '00000000-0000-4000-8000-00000000a001',
   'Office hours', 'America/Los_Angeles')
on conflict do nothing;
insert into public.schedule_windows (id, org_id, schedule_id, weekday, opens, closes)
select ('00000000-0000-4000-8000-0000000e010' || d)::uuid, '00000000-0000-4000-8000-00000000a001',
       '00000000-0000-4000-8000-00000000e001', d, '08:00', '17:00'
  from generate_series(1, 5) d
on conflict do nothing;
insert into public.schedule_exceptions (id, org_id, schedule_id, on_date, name) values
  ('00000000-0000-4000-8000-00000000e021', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000e001', '2026-12-25', 'Christmas Day')
on conflict do nothing;

insert into public.caller_lists (id, org_id, name) values
  ('00000000-0000-4000-8000-00000000e101', '00000000-0000-4000-8000-00000000a002', 'Blocked'),
  ('00000000-0000-4000-8000-00000000e102', '00000000-0000-4000-8000-00000000a003', 'VIP')
on conflict do nothing;
insert into public.caller_list_entries (id, org_id, list_id, number, is_prefix, note) values
  ('00000000-0000-4000-8000-00000000e111', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000e101', '+19005550100', false, 'robocaller'),
  ('00000000-0000-4000-8000-00000000e112', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000e101', '+1900', true, 'premium-rate numbers'),
  ('00000000-0000-4000-8000-00000000e113', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000e102', '+13125550199', false, 'Sam Okafor')
on conflict do nothing;

insert into public.routing_rules (id, org_id, phone_number_id, position, name,
                                  schedule_id, schedule_open, caller_in_list, when_at_limit,
                                  action, agent_id, transfer_to, reject_reason) values
  ('00000000-0000-4000-8000-00000000e201', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000c008', 10, 'After hours to voicemail',
   '00000000-0000-4000-8000-00000000e001', false, null, null,
   'agent', '00000000-0000-4000-8000-00000000b006', null, null),
  ('00000000-0000-4000-8000-00000000e202', '00000000-0000-4000-8000-00000000a001',
   '00000000-0000-4000-8000-00000000c009', 10, 'Overflow to the front desk',
   null, null, null, 'number',
   'transfer', null, '+14155550199', null),
  ('00000000-0000-4000-8000-00000000e203', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000c010', 10, 'Triage prompt A/B test',
   null, null, null, null,
   'split', null, null, null),
  ('00000000-0000-4000-8000-00000000e204', '00000000-0000-4000-8000-00000000a002',
   '00000000-0000-4000-8000-00000000c011', 10, 'Block list',
   null, null, '00000000-0000-4000-8000-00000000e101', null,
   'reject', null, null, 'decline'),
  ('00000000-0000-4000-8000-00000000e205', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000c012', 10, 'VIPs to the concierge',
   null, null, '00000000-0000-4000-8000-00000000e102', null,
   'agent', '00000000-0000-4000-8000-00000000b008', null, null)
on conflict do nothing;
insert into public.routing_rule_agents (id, org_id, rule_id, agent_id, weight) values
  ('00000000-0000-4000-8000-00000000e301', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000e203', '00000000-0000-4000-8000-00000000b004', 90),
  ('00000000-0000-4000-8000-00000000e302', '00000000-0000-4000-8000-00000000a003',
   '00000000-0000-4000-8000-00000000e203', '00000000-0000-4000-8000-00000000b007', 10)
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

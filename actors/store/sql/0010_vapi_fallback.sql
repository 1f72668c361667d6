-- Why a call to a number on Vapi was not answered by Vapi (api/vapi_calls.py): Vapi did
-- not answer in time, refused, gave TwiML Twilio could not run, or no key is configured;
-- the caller then got this engine or the on-call number (projects.vapi_fallback). NULL
-- for every other call. Kept from its first report, like the call's other identity.
ALTER TABLE calls ADD COLUMN vapi_fallback text CHECK (length(vapi_fallback) <= 64);

-- A business function still running when its call ended is recorded as 'cancelled'
-- (actors/call/functions.py): the caller never heard its answer, though the function may
-- have done its work.
ALTER TABLE function_calls DROP CONSTRAINT function_calls_outcome_check;
ALTER TABLE function_calls
    ADD CONSTRAINT function_calls_outcome_check
    CHECK (outcome IN ('ok', 'error', 'timeout', 'cancelled'));

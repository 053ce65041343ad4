-- init.lua — load an item's stock into Redis once. Restarts and reloads never re-add it.
--
-- KEYS[1]  <base>item:<sku>
-- ARGV[1]  initial stock
-- Returns 1 if the item was created, 0 if it already existed.

return ensure_item(KEYS[1], ARGV[1])

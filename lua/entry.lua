-- entry.lua — a raffle entrant's state (read only), for `GET …/entries/me`.
--
-- KEYS[1]  <base>admission   KEYS[2]  <base>entrants   KEYS[3]  <base>ranking
-- KEYS[4]  <base>selection
-- ARGV[1]  user id           ARGV[2]  the user's ranking member
-- Returns entry_state (lib.lua).

return entry_state(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])

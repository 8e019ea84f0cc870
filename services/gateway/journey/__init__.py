"""The journey read model: `journey.stage_changed.v1` projected into `journey_transitions` and
`member_stages` (`projection`, `store`), served by GET /v1/members/{id}/journey and
GET /v1/stages (`routes`, `models`); `store.merge_member` and `store.erase_members` are its
part of a merge and an erasure."""

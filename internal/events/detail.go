package events

import (
	"encoding/json"
	"fmt"
)

// DetailText spells a value of an event's detail (decoded JSON) for a
// person: a string as it is, anything else as compact JSON.
func DetailText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

"""Admin: staff review calls, their timelines and timings. Call records are read-only here."""

from django.contrib import admin, messages

from calls import services
from calls.models import CallEvent, CallSession, Profile, Room

TIMESTAMP_FIELDS = (
    "created_at", "delivered_at", "accepted_at", "caller_joined_at", "callee_joined_at",
    "caller_published_at", "callee_published_at", "caller_first_frame_at",
    "callee_first_frame_at", "caller_connected_at", "callee_connected_at", "connected_at",
    "ended_at",
)


class CallEventInline(admin.TabularInline):
    model = CallEvent
    fields = ("at", "kind", "actor", "device_id", "payload")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("at", "id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CallSession)
class CallSessionAdmin(admin.ModelAdmin):
    list_display = ("call_id", "caller", "callee", "call_type", "phase", "end_reason",
                    "created_at", "setup_ms", "duration")
    list_filter = ("phase", "end_reason", "call_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("call_id", "caller__username", "callee__username",
                     "caller__profile__display_name", "callee__profile__display_name")
    list_select_related = ("caller", "callee")
    date_hierarchy = "created_at"
    inlines = [CallEventInline]
    actions = ["end_calls"]
    fieldsets = (
        (None, {"fields": ("call_id", "caller", "callee", "call_type", "phase", "end_reason",
                           "ended_by", "room", "channel", "extension", "timeout_ms",
                           "deadline_at", "caller_device", "callee_device", "version")}),
        ("Timings", {"fields": TIMESTAMP_FIELDS + ("timings", "costs")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in CallSession._meta.fields] + ["timings"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # records change only through the call services (locks, version, events)

    @admin.display(description="setup (ms)")
    def setup_ms(self, obj):
        return services.call_costs(obj).get("connected")

    @admin.display(description="duration")
    def duration(self, obj):
        ms = obj.duration_ms()
        return f"{ms / 1000:.1f} s" if ms is not None else "-"

    @admin.display(description="timings from the call's start (ms)")
    def timings(self, obj):
        costs = services.call_costs(obj)
        costs.pop("client", None)
        return ", ".join(f"{name} {ms}" for name, ms in costs.items()) or "-"

    @admin.action(description="End the selected live calls")
    def end_calls(self, request, queryset):
        ended = 0
        for call in queryset.filter(phase__in=services.LIVE_PHASES):
            try:
                services.call_end_by_server(call_id=call.call_id, staff_user=request.user)
                ended += 1
            except services.ServiceError as error:
                self.message_user(request, f"{call.call_id}: {error.message}", messages.WARNING)
        self.message_user(request, f"Ended {ended} call(s).")


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "display_name", "active_call")
    search_fields = ("user__username", "display_name")
    readonly_fields = ("active_call", "event_seq")


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("title", "owner__username")

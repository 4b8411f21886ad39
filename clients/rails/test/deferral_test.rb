# frozen_string_literal: true

require "test_helper"

class DeferralTest < ActiveSupport::TestCase
  test "the header names only the parameters given, in seconds" do
    assert_equal "1", Asyncreply::Deferral.new.header_value
    assert_equal "1; timeout=3600; retention=604800; wait=2",
      Asyncreply::Deferral.new(timeout: 1.hour, retention: 1.week, wait: 2).header_value
    assert_equal "1; wait=0", Asyncreply::Deferral.new(wait: 0).header_value
  end

  test "parameters must be whole seconds, timeout and retention at least one" do
    assert_raises(ArgumentError) { Asyncreply::Deferral.new(timeout: 0) }
    assert_raises(ArgumentError) { Asyncreply::Deferral.new(retention: -1) }
    assert_raises(ArgumentError) { Asyncreply::Deferral.new(wait: -1) }
    assert_raises(ArgumentError) { Asyncreply::Deferral.new(wait: 1.5) }
    assert_raises(ArgumentError) { Asyncreply::Deferral.new(timeout: "60") }
  end

  test "the async: option" do
    assert_nil Asyncreply::Deferral.from_async_option(false)
    assert_nil Asyncreply::Deferral.from_async_option(nil)
    assert_equal({}, Asyncreply::Deferral.from_async_option(true).to_h)
    assert_equal({ timeout: 60 }, Asyncreply::Deferral.from_async_option(timeout: 60).to_h)
    assert_equal({ wait: 5 }, Asyncreply::Deferral.from_async_option("wait" => 5).to_h)
    assert_raises(ArgumentError) { Asyncreply::Deferral.from_async_option(tiemout: 60) }
    assert_raises(ArgumentError) { Asyncreply::Deferral.from_async_option("yes") }
  end
end
